"""docker-compose.yml and the Dockerfile: the real Compose v2 binary accepts the file (and rejects
broken ones), and the file follows the project's rules: health checks everywhere, dependencies on
health, only the CPE and API ports published, one hardened image for every ACS service, and the
same settings as the Kubernetes manifests."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / "deploy" / "compose.env.example"
BROKEN = Path(__file__).resolve().parent / "broken"

# service -> (port its health check asks, ports published on the host)
ACS_SERVICES = {
    "gateway": (7547, {7547}),
    "orchestrator": (7560, set()),
    "inventory": (7561, set()),
    "fileserver": (7562, {7567}),
    "console": (7563, set()),
    "router": (7557, {7557}),
}
HEALTHY_CONDITIONS = {"service_healthy", "service_completed_successfully"}
TOPICS = ("cwmp.inbound", "cwmp.replies", "device.events", "file.events", "campaign.events", "acs.audit")
ACS_UID = 10001


def run_compose(binary: Path, compose_file: Path, *args: str, env_file: Path | None = None,
                ) -> subprocess.CompletedProcess[str]:
    # A clean environment: variables of the test run (ACS_KAFKA_BOOTSTRAP, ...) must not leak into
    # the interpolation, and a developer's .env must not be read.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    command = [str(binary), "-f", str(compose_file), "--env-file", str(env_file or os.devnull), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=compose_file.parent,
                          timeout=60)


@pytest.fixture(scope="module")
def model(compose_binary: Path) -> dict:
    """docker-compose.yml as Compose itself resolves it (anchors merged, variables interpolated)."""
    result = run_compose(compose_binary, COMPOSE_FILE, "config", "--format", "json", env_file=ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def compose_problems(model: dict) -> list[str]:
    """Everything in a resolved compose model that breaks the project's rules."""
    services: dict[str, dict] = model["services"]
    problems: list[str] = []
    one_shots = {dep for svc in services.values() for dep, how in (svc.get("depends_on") or {}).items()
                 if how.get("condition") == "service_completed_successfully"}
    for name, svc in services.items():
        health = svc.get("healthcheck") or {}
        if name in one_shots:
            if svc.get("restart") not in (None, "no"):
                problems.append(f"{name}: a one-shot service must not restart")
        elif health.get("disable") or not health.get("test"):
            problems.append(f"{name}: no healthcheck")
        for dep, how in (svc.get("depends_on") or {}).items():
            if how.get("condition") not in HEALTHY_CONDITIONS:
                problems.append(f"{name}: depends on {dep} with condition {how.get('condition')}, "
                                "not service_healthy/service_completed_successfully")
        allowed = ACS_SERVICES.get(name, (None, set()))[1]
        for port in svc.get("ports") or []:
            if port.get("published") and int(port["target"]) not in allowed:
                problems.append(f"{name}: publishes port {port['target']} on the host")
        if (svc.get("command") or [None])[0] in ACS_SERVICES:
            if svc.get("user") != f"{ACS_UID}:{ACS_UID}":
                problems.append(f"{name}: must run as {ACS_UID}:{ACS_UID}")
            if svc.get("read_only") is not True:
                problems.append(f"{name}: root filesystem must be read-only")
            if not any(t.split(":")[0] == "/tmp" for t in svc.get("tmpfs") or []):
                problems.append(f"{name}: /tmp must be a tmpfs")
            if "ALL" not in (svc.get("cap_drop") or []):
                problems.append(f"{name}: must drop ALL capabilities")
    return problems


# --- the real Compose binary ------------------------------------------------------------------------
def test_compose_file_is_valid(compose_binary: Path) -> None:
    result = run_compose(compose_binary, COMPOSE_FILE, "config", "-q", env_file=ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_secrets(compose_binary: Path) -> None:
    result = run_compose(compose_binary, COMPOSE_FILE, "config", "-q")
    assert result.returncode != 0
    assert "required variable" in result.stderr and "in .env" in result.stderr


@pytest.mark.parametrize(("fixture", "culprit"), [
    ("compose-unknown-key.yml", "healthchek"),
    ("compose-wrong-type.yml", "retries"),
    ("compose-bad-dependency.yml", "undefined service"),
])
def test_compose_binary_rejects_broken_files(compose_binary: Path, fixture: str, culprit: str) -> None:
    result = run_compose(compose_binary, BROKEN / fixture, "config", "-q")
    assert result.returncode != 0
    assert culprit in result.stderr


# --- the project's rules --------------------------------------------------------------------------
def test_compose_follows_the_rules(model: dict) -> None:
    assert compose_problems(model) == []


def test_rule_checker_catches_violations(compose_binary: Path) -> None:
    result = run_compose(compose_binary, BROKEN / "compose-no-healthcheck.yml", "config", "--format", "json")
    assert result.returncode == 0, result.stderr  # valid Compose: only our rules reject it
    problems = "\n".join(compose_problems(json.loads(result.stdout)))
    for expected in ("mongodb: no healthcheck", "gateway: no healthcheck", "condition service_started",
                     "publishes port 27017", "read-only", f"run as {ACS_UID}", "/tmp", "capabilities"):
        assert expected in problems


def test_acs_services_run_from_the_one_image(model: dict) -> None:
    services = model["services"]
    images = set()
    for name, (health_port, published) in ACS_SERVICES.items():
        svc = services[name]
        assert svc["command"] == [name]
        assert Path(svc["build"]["context"]) == REPO_ROOT and svc["build"]["dockerfile"] == "Dockerfile"
        images.add(svc["image"])
        test = " ".join(svc["healthcheck"]["test"])
        assert svc["healthcheck"]["test"][:3] == ["CMD", "python", "-c"]  # slim images have no curl
        assert re.search(rf"urllib.*http://127\.0\.0\.1:{health_port}/(readyz|healthz)", test), test
        assert {int(p["target"]) for p in svc.get("ports") or []} == published
        assert {int(p["published"]) for p in svc.get("ports") or []} == published
    assert len(images) == 1


def test_only_cpe_and_api_ports_are_published(model: dict) -> None:
    published = {int(p["published"]) for svc in model["services"].values() for p in svc.get("ports") or []}
    assert published == {7547, 7557, 7567}


def test_startup_order(model: dict) -> None:
    services = model["services"]

    def conditions(name: str) -> dict[str, str]:
        return {dep: how["condition"] for dep, how in (services[name].get("depends_on") or {}).items()}

    for name in ("gateway", "orchestrator", "inventory", "fileserver"):
        assert conditions(name)["kafka-init"] == "service_completed_successfully"
        assert conditions(name)["mongodb"] == "service_healthy"
    assert conditions("fileserver")["minio-init"] == "service_completed_successfully"
    assert conditions("router") == {n: "service_healthy" for n in ("orchestrator", "inventory", "fileserver",
                                                                   "console")}
    assert conditions("console") == {"mongodb": "service_healthy"}
    assert conditions("kafka-init") == {"kafka": "service_healthy"}
    assert conditions("minio-init") == {"minio": "service_healthy"}


def test_infrastructure(model: dict) -> None:
    services = model["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert not any("zookeeper" in name for name in services)
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # Topics come from the ACS image itself (`acs topics --ensure`), as in the Kubernetes Job.
    assert services["kafka-init"]["command"] == ["topics", "--ensure"]
    assert services["kafka-init"]["image"] == services["gateway"]["image"]
    mongodb = services["mongodb"]
    assert mongodb["image"].startswith("mongo:7")
    assert "--replSet rs0" in " ".join(mongodb["entrypoint"])
    assert "rs.initiate" in " ".join(mongodb["healthcheck"]["test"])
    assert services["minio"]["image"].startswith("minio/minio")
    assert "mc mb" in " ".join(services["minio-init"]["command"])


def test_acs_settings(model: dict) -> None:
    env = model["services"]["gateway"]["environment"]
    for name in ACS_SERVICES:
        assert model["services"][name]["environment"] == env  # every process, the same settings
    assert env["ACS_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["ACS_KAFKA_IDEMPOTENCE"] == "true"
    assert "@mongodb:27017/" in env["ACS_MONGODB_URL"] and "replicaSet=rs0" in env["ACS_MONGODB_URL"]
    assert env["ACS_S3_ENDPOINT"] == "minio:9000"
    assert env["ACS_BIND_HOST"] == "0.0.0.0"
    for name in ("inventory", "orchestrator", "fileserver", "console"):
        assert env[f"ACS_{name.upper()}_URL"] == f"http://{name}:{ACS_SERVICES[name][0]}"
    settings_module = pytest.importorskip("services.common.settings")
    known = {f"ACS_{field.upper()}" for field in settings_module.Settings.model_fields}
    assert set(env) <= known, set(env) - known


def test_same_settings_and_image_as_kubernetes(model: dict, manifests: dict[str, list[dict]]) -> None:
    compose_env = set(model["services"]["gateway"]["environment"])
    for overlay, docs in manifests.items():
        k8s_env: set[str] = set()
        for doc in docs:
            if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("acs-settings"):
                k8s_env |= set(doc["data"])
            if doc["kind"] == "Secret" and doc["metadata"]["name"] == "acs-secrets":
                k8s_env |= set(doc["stringData"])
        assert compose_env == k8s_env, f"{overlay}: compose only {compose_env - k8s_env}, " \
                                       f"kubernetes only {k8s_env - compose_env}"
        k8s_images = {c["image"] for d in docs if d["kind"] in ("Deployment", "Job")
                      for c in d["spec"]["template"]["spec"]["containers"]}
        (k8s_image,) = k8s_images
        compose_image = model["services"]["gateway"]["image"]
        repository = compose_image.rsplit(":", 1)[0].rsplit("/", 1)[-1]
        assert k8s_image.rsplit(":", 1)[0].rsplit("/", 1)[-1] == repository


# --- the Dockerfile -------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (REPO_ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def test_dockerfile_builds_one_hardened_image() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    stages = [i for i, (k, _) in enumerate(instructions) if k == "FROM"]
    assert len(stages) >= 2, "multi-stage build expected"
    for index in stages:
        assert instructions[index][1].startswith("${PYTHON_IMAGE}"), instructions[index]
    final = instructions[stages[-1]:]
    text = "\n".join(f"{k} {a}" for k, a in instructions)
    assert "pip wheel" in text
    assert "[local" not in text and ",local" not in text, "the image must not install the `local` extra"
    assert ("USER", f"{ACS_UID}:{ACS_UID}") in final or ("USER", str(ACS_UID)) in final
    assert f'ARG ACS_UID={ACS_UID}' in text and '--uid "${ACS_UID}"' in text
    assert ("ENTRYPOINT", '["acs"]') in final
    exposed = {int(p) for k, a in final if k == "EXPOSE" for p in a.split()}
    assert exposed == {7547, 7557, 7560, 7561, 7562, 7563, 7567}
    # The runtime stage takes only the built virtualenv, nothing from the build context.
    copies = [a for k, a in final if k == "COPY"]
    assert copies and all(a.startswith("--from=") for a in copies)
    env = " ".join(a for k, a in final if k == "ENV")
    assert "ACS_BIND_HOST=0.0.0.0" in env and "PYTHONDONTWRITEBYTECODE=1" in env


def dockerignore_allows(patterns: list[str], name: str) -> bool:
    allowed = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatch(name, pattern.removeprefix("!").rstrip("/")):
            allowed = negated
    return allowed


def test_dockerignore_lets_in_exactly_what_the_wheel_needs() -> None:
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.split(".")[0].rstrip("*") for pattern in includes}
    needed = {"pyproject.toml", pyproject["project"]["readme"], *packages}
    for name in sorted(needed):
        assert dockerignore_allows(patterns, name), f".dockerignore keeps out {name}"
    for name in (".git", ".venv", ".env", ".acs", "tests", "deploy", "docs", "docker-compose.yml"):
        assert not dockerignore_allows(patterns, name), f".dockerignore lets in {name}"
