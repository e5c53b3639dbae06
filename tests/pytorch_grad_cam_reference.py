"""pytorch-grad-cam's own `GradCAM`, imported without torchvision (no tests here).

The package's `__init__` imports all its methods, and two modules on
GradCAM's path import torchvision at their top: `utils/image.py` for
`preprocess_image` (torchvision.transforms) and `utils/model_targets.py` for
the object-detection target `FasterRCNNBoxScoreTarget` (torchvision.ops).
GradCAM uses neither. torchvision's PyPI wheels link torch's CUDA libraries
and cannot import beside the CPU build of torch this project runs, so this
loads, from the installed files, exactly the modules GradCAM runs on, with
the package `__init__`s and those import lines left out. It first checks
that the names those lines bind are used nowhere but in those two
definitions: were GradCAM ever to use torchvision, it would fail with a
NameError here instead of running on a substitute.
"""

import ast
import importlib.util
import pathlib
import sys
import types

# What GradCAM runs on, in import order (each module's dependencies first).
MODULES = ("activations_and_gradients", "utils.svd_on_activations",
           "utils.image", "utils.model_targets", "base_cam", "grad_cam")
# The only definitions allowed to use what torchvision imports bind.
TORCHVISION_USERS = {"preprocess_image", "FasterRCNNBoxScoreTarget"}


def _without_torchvision(path):
    tree = ast.parse(path.read_text(), str(path))
    kept, bound = [], set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                (getattr(node, "module", None) or alias.name).split(".")[0]
                == "torchvision" for alias in node.names):
            bound |= {(alias.asname or alias.name).split(".")[0]
                      for alias in node.names}
            continue
        kept.append(node)
    for node in kept:
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        name = getattr(node, "name", None)
        if used & bound and name not in TORCHVISION_USERS:
            raise ImportError(f"{path}: {name or ast.dump(node)[:80]} uses "
                              f"{sorted(used & bound)} from torchvision")
    tree.body = kept
    return compile(tree, str(path), "exec")


def load():
    """`(GradCAM, ClassifierOutputTarget, scale_cam_image)` from pytorch-grad-cam."""
    if "pytorch_grad_cam.grad_cam" not in sys.modules:
        spec = importlib.util.find_spec("pytorch_grad_cam")
        if spec is None:
            raise ImportError("pytorch-grad-cam is not installed "
                              "(pip install --no-deps grad-cam==1.5.7)")
        root = pathlib.Path(spec.origin).parent
        for name, folder in (("pytorch_grad_cam", root),
                             ("pytorch_grad_cam.utils", root / "utils")):
            package = types.ModuleType(name)   # the real folder; __init__ not run
            package.__path__ = [str(folder)]
            sys.modules[name] = package
        for name in MODULES:
            path = root / (name.replace(".", "/") + ".py")
            module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(
                f"pytorch_grad_cam.{name}", path))
            sys.modules[module.__name__] = module
            exec(_without_torchvision(path), module.__dict__)
    modules = sys.modules
    return (modules["pytorch_grad_cam.grad_cam"].GradCAM,
            modules["pytorch_grad_cam.utils.model_targets"].ClassifierOutputTarget,
            modules["pytorch_grad_cam.utils.image"].scale_cam_image)
