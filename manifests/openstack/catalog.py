#!/usr/bin/python3
"""Keystone's catalog for provisiond's OpenStack controller: the service project, the service
users (admin in it), and each API's service and public/internal/admin endpoints.

`catalog.py check FILE` exits 0 when everything in FILE (JSON, root-only: it holds the service
users' passwords) is in place and each service user can log in; `catalog.py apply FILE` makes
it so, changing only what is missing or wrong. One process and one login (openstacksdk), not
one `openstack` CLI call per object: that is 40 calls of about 1.5 s each.
"""

import json
import sys

import openstack


def connect(spec, username, password, project):
    return openstack.connect(auth_url=spec["auth_url"], username=username, password=password,
                             project_name=project, user_domain_name="Default",
                             project_domain_name="Default", region_name=spec["region"])


def user_can_log_in(spec, user):
    try:
        connect(spec, user["name"], user["password"], "service").authorize()
    except openstack.exceptions.SDKException:
        return False
    return True


def run(spec, apply):
    """The missing or wrong items (each fixed on the way when `apply`)."""
    admin = connect(spec, "admin", spec["admin_password"], "admin")
    identity = admin.identity
    problems = []
    project = identity.find_project("service", domain_id="default")
    if project is None:
        problems.append("project service")
        if not apply:
            return problems
        project = identity.create_project(name="service", domain_id="default", description="OpenStack services")
    role = identity.find_role("admin")
    for user in spec["users"]:
        found = identity.find_user(user["name"], domain_id="default")
        if found is None:
            problems.append(f"user {user['name']}")
            if apply:
                found = identity.create_user(name=user["name"], password=user["password"], domain_id="default")
        elif not user_can_log_in(spec, user):
            problems.append(f"password of user {user['name']}")
            if apply:
                identity.update_user(found, password=user["password"])
        if found is not None and not identity.validate_user_has_project_role(project, found, role):
            problems.append(f"admin role of {user['name']} in project service")
            if apply:
                identity.assign_project_role_to_user(project, found, role)
    for entry in spec["services"]:
        service = identity.find_service(entry["name"])
        if service is None:
            problems.append(f"service {entry['name']}")
            if not apply:
                continue
            service = identity.create_service(name=entry["name"], type=entry["type"], enabled=True)
        have = {(e.interface, e.url) for e in identity.endpoints(service_id=service.id, region_id=spec["region"])}
        for interface in ("public", "internal", "admin"):
            if (interface, entry["url"]) not in have:
                problems.append(f"{interface} endpoint of {entry['name']}")
                if apply:
                    identity.create_endpoint(service_id=service.id, interface=interface, url=entry["url"],
                                             region_id=spec["region"])
    return problems


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("check", "apply"):
        sys.exit("usage: catalog.py check|apply FILE")
    with open(sys.argv[2], encoding="utf-8") as handle:
        spec = json.load(handle)
    problems = run(spec, sys.argv[1] == "apply")
    if sys.argv[1] == "check" and problems:
        sys.exit("missing or wrong: " + ", ".join(problems))
    print("made: " + ", ".join(problems) if problems else "catalog complete")


if __name__ == "__main__":
    main()
