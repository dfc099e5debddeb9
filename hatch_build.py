"""Build hook: compile the native TFTP sender (provisiond/tftp/sender.c).

It is plain C with no Python API, loaded with ctypes (provisiond/tftp/native.py), so a C
compiler is all it needs. The library is written beside its source, where an editable install
finds it, and a wheel carries it (the wheel is then tagged for this platform). Without a
compiler the build goes on with a warning: the server then runs TFTP transfers in Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = "provisiond/tftp/sender.c"
LIBRARY = "provisiond/tftp/_sender.so"
CFLAGS = ["-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror", "-std=c11"]


class NativeBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        source, library = Path(self.root, SOURCE), Path(self.root, LIBRARY)
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            print(f"provisiond build: no C compiler, {LIBRARY} not built; TFTP lock-step "
                  "transfers will run in Python (apt install gcc, then reinstall)", file=sys.stderr)
            return
        command = [compiler, *CFLAGS, "-o", str(library), str(source)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"provisiond build: compiling {SOURCE} failed:\n"
                               f"{' '.join(command)}\n{result.stderr}")
        if version == "editable":
            return  # the editable install imports from the source tree, where the library is
        build_data["artifacts"].append(LIBRARY)  # included although .gitignore lists it
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
