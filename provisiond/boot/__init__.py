"""What a node boots: the one decision (decision.py), the install methods (methods.py), the
boot-file formats (files.py), and the service that reads the store for them (service.py)."""
