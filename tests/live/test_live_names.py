"""``meshlab.live.verify`` is one thing: the module (its function is ``verify_catalog``)."""

from __future__ import annotations

import subprocess
import sys
import types


def test_meshlab_live_verify_is_the_module_before_and_after_its_import() -> None:
    # Before the submodule is imported, the package's lazy attributes answer the name; they
    # must not answer it with a function that the import then replaces by the module.
    script = ("import types, meshlab.live as live\n"
              "from meshlab.live import verify\n"
              "assert isinstance(verify, types.ModuleType), verify\n"
              "assert live.verify_catalog is verify.verify_catalog\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_verify_catalog_is_reachable_from_the_package() -> None:
    import meshlab.live
    from meshlab.live import verify

    assert isinstance(verify, types.ModuleType)
    assert meshlab.live.verify_catalog is verify.verify_catalog
