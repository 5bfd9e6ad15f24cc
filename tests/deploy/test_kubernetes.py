"""deploy/: every overlay renders with kustomize, passes `kubernetes-validate --strict` for
Kubernetes 1.30, and follows the project's rules (probes, resources, non-root, read-only root,
autoscaling within the Kafka partition count, Ingress routing equal to the router's)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
BROKEN = Path(__file__).resolve().parent / "broken"
OVERLAYS = ("small", "large")  # the `rendered` and `manifests` fixtures (conftest.py) hold these
# Where each service answers /metrics.
SERVICES = {"gateway": 7548, "orchestrator": 7560, "inventory": 7561, "fileserver": 7562, "console": 7563}
CONSUMERS = ("acs-orchestrator", "acs-inventory")  # Kafka consumer groups on cwmp.inbound
TOPICS = {"cwmp.inbound", "cwmp.replies", "device.events", "file.events", "campaign.events", "acs.audit"}
WORKLOAD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}
SESSIONS_METRIC = "acs_gateway_sessions_per_second"

Render = Callable[[Path], CompletedProcess[str]]  # the `kustomize` fixture
Validate = Callable[[str], CompletedProcess[str]]  # the `k8s_validate` fixture
Manifests = dict[str, list[dict]]  # the `manifests` fixture: overlay -> documents


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def settings_map(docs: list[dict]) -> dict[str, str]:
    (configmap,) = [d for d in docs
                    if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("acs-settings")]
    return configmap["data"]


# --- the project's rules for workloads, as a checker that can be shown to catch violations -------
def workload_problems(docs: list[dict]) -> list[str]:
    """Everything in these manifests that breaks the rules every ACS workload follows."""
    problems: list[str] = []
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext") or {}
        if pod.get("enableServiceLinks") is not False:
            problems.append(f"{where}: enableServiceLinks must be false (links set ACS_*_PORT=tcp://...)")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
            cw = f"{where}/{container['name']}"
            sc = container.get("securityContext") or {}
            effective = {**pod_sc, **sc}  # the container's settings win over the pod's
            if effective.get("runAsNonRoot") is not True:
                problems.append(f"{cw}: runAsNonRoot must be true")
            if effective.get("runAsUser") != 10001:
                problems.append(f"{cw}: runAsUser must be 10001, is {effective.get('runAsUser')}")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cw}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cw}: allowPrivilegeEscalation must be false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{cw}: capabilities must drop ALL")
            if (effective.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{cw}: seccompProfile must be RuntimeDefault")
            resources = container.get("resources") or {}
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(section) or {}):
                        problems.append(f"{cw}: no {section}.{resource}")
            tmp = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
            if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                problems.append(f"{cw}: /tmp must be an emptyDir volume")
            if doc["kind"] != "Deployment":
                continue
            port_names = {p.get("name") for p in container.get("ports") or []}
            port_numbers = {p["containerPort"] for p in container.get("ports") or []}
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                get = (container.get(probe) or {}).get("httpGet")
                if not get:
                    problems.append(f"{cw}: no {probe} (HTTP GET {path})")
                    continue
                if get.get("path") != path:
                    problems.append(f"{cw}: {probe} must GET {path}, gets {get.get('path')}")
                if get.get("port") not in port_names | port_numbers:
                    problems.append(f"{cw}: {probe} port {get.get('port')} is not a container port")
    return problems


def test_every_yaml_file_in_deploy_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc is None or isinstance(doc, dict), path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_strict_validation(overlay: str, rendered: dict[str, str],
                                          k8s_validate: Validate) -> None:
    result = k8s_validate(rendered[overlay])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("fixture", "culprit"), [
    ("k8s-unknown-field.yaml", "imagePullPolcy"),
    ("k8s-wrong-type.yaml", "replicas"),
])
def test_strict_validation_catches_broken_manifests(
        fixture: str, culprit: str, k8s_validate: Validate) -> None:
    result = k8s_validate((BROKEN / fixture).read_text())
    assert result.returncode != 0
    assert culprit in result.stdout + result.stderr


def test_kustomize_fails_on_a_broken_kustomization(kustomize: Render) -> None:
    result = kustomize(BROKEN / "kustomize-missing-resource")
    assert result.returncode != 0
    assert "does-not-exist.yaml" in result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_every_part(overlay: str, manifests: Manifests) -> None:
    docs = manifests[overlay]
    expected = {f"acs-{name}" for name in SERVICES}
    assert set(by_kind(docs, "Deployment")) == expected  # no router: the Ingress routes instead
    assert set(by_kind(docs, "Service")) == expected
    assert set(by_kind(docs, "PodDisruptionBudget")) == expected
    assert set(by_kind(docs, "HorizontalPodAutoscaler")) == expected
    assert set(by_kind(docs, "Ingress")) == {"acs-cwmp", "acs-api", "acs-files"}
    assert set(by_kind(docs, "Secret")) == {"acs-secrets"}
    assert "ServiceMonitor" not in {d["kind"] for d in docs}  # its CRD is optional: a component
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "acs", doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "acs"
        assert doc["metadata"]["labels"]["acs.example.net/size"] == overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_follow_the_rules(overlay: str, manifests: Manifests) -> None:
    assert workload_problems(manifests[overlay]) == []


def test_rule_checker_catches_an_insecure_deployment() -> None:
    docs = list(yaml.safe_load_all((BROKEN / "k8s-insecure-deployment.yaml").read_text()))
    problems = "\n".join(workload_problems(docs))
    for expected in ("readinessProbe", "livenessProbe", "runAsNonRoot", "runAsUser must be 10001",
                     "readOnlyRootFilesystem", "allowPrivilegeEscalation", "drop ALL", "RuntimeDefault",
                     "requests.cpu", "limits.memory", "/tmp", "enableServiceLinks"):
        assert expected in problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_runs_its_command_from_the_one_image(overlay: str, manifests: Manifests) -> None:
    docs = manifests[overlay]
    images = set()
    for name, deployment in by_kind(docs, "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [name.removeprefix("acs-")]
        assert "command" not in container  # the image's ENTRYPOINT is `acs`
        ports = {p["containerPort"] for p in container["ports"]}
        assert SERVICES[name.removeprefix("acs-")] in ports
        images.add(container["image"])
    (job,) = by_kind(docs, "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["topics", "--ensure"]
    images.add(container["image"])
    assert len(images) == 1
    (image,) = images
    assert re.fullmatch(r"[\w.\-/:]+/acs:[\w.\-]+", image), image
    fileserver = by_kind(docs, "Deployment")["acs-fileserver"]["spec"]["template"]["spec"]
    assert 7567 in {p["containerPort"] for p in fileserver["containers"][0]["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_topic_job_is_bounded(overlay: str, manifests: Manifests) -> None:
    (job,) = by_kind(manifests[overlay], "Job").values()
    assert job["metadata"]["name"] == "acs-topics"
    assert 0 < job["spec"]["backoffLimit"] <= 10
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaling_and_disruption_budgets(overlay: str, manifests: Manifests) -> None:
    docs = manifests[overlay]
    deployments = by_kind(docs, "Deployment")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    partitions = int(settings_map(docs)["ACS_KAFKA_PARTITIONS"])
    for name, deployment in deployments.items():
        assert "replicas" not in deployment["spec"], f"{name}: the HPA owns the replica count"
        hpa = hpas[name]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
        if name in CONSUMERS:
            # A partition is read by one member of a group: more replicas than partitions idle.
            assert hpa["spec"]["maxReplicas"] <= partitions, f"{name}: maxReplicas > {partitions} partitions"
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        pdb = by_kind(docs, "PodDisruptionBudget")[name]
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
    gateway_metrics = hpas["acs-gateway"]["spec"]["metrics"]
    (pods_metric,) = [m for m in gateway_metrics if m["type"] == "Pods"]
    assert pods_metric["pods"]["metric"]["name"] == SESSIONS_METRIC
    assert pods_metric["pods"]["target"]["type"] == "AverageValue"


def test_large_overlay_is_larger(manifests: Manifests) -> None:
    small, large = manifests["small"], manifests["large"]
    assert int(settings_map(large)["ACS_KAFKA_PARTITIONS"]) > int(settings_map(small)["ACS_KAFKA_PARTITIONS"])
    for name in by_kind(small, "HorizontalPodAutoscaler"):
        assert (by_kind(large, "HorizontalPodAutoscaler")[name]["spec"]["maxReplicas"]
                > by_kind(small, "HorizontalPodAutoscaler")[name]["spec"]["maxReplicas"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_their_pods_and_name_a_metrics_port(overlay: str, manifests: Manifests) -> None:
    docs = manifests[overlay]
    deployments = by_kind(docs, "Deployment")
    for name, service in by_kind(docs, "Service").items():
        pod_template = deployments[name]["spec"]["template"]
        assert service["spec"]["selector"].items() <= pod_template["metadata"]["labels"].items()
        (container,) = pod_template["spec"]["containers"]
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert all(p.get("name") for p in service["spec"]["ports"])
        assert ports["metrics"]["targetPort"] in container_ports
        assert service["metadata"]["labels"]["acs.example.net/metrics"] == "true"
        assert service["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
        scrape_port = int(service["metadata"]["annotations"]["prometheus.io/port"])
        assert scrape_port == SERVICES[name.removeprefix("acs-")]
        for port in ports.values():
            assert port["targetPort"] in container_ports, f"{name}: port {port['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_and_secrets_are_known_settings(overlay: str, manifests: Manifests) -> None:
    settings_module = pytest.importorskip("services.common.settings")
    known = {f"ACS_{field.upper()}" for field in settings_module.Settings.model_fields}
    docs = manifests[overlay]
    secret = by_kind(docs, "Secret")["acs-secrets"]
    config = settings_map(docs)
    assert set(config) <= known, set(config) - known
    assert set(secret["stringData"]) <= known, set(secret["stringData"]) - known
    assert {"ACS_SECRET_KEY", "ACS_ADMIN_API_KEY", "ACS_MONGODB_URL", "ACS_S3_ACCESS_KEY",
            "ACS_S3_SECRET_KEY", "ACS_CPE_PASSWORD"} <= set(secret["stringData"])
    assert not set(config) & set(secret["stringData"])
    assert all("REPLACE-ME" in value for value in secret["stringData"].values())  # placeholders only
    assert config["ACS_BIND_HOST"] == "0.0.0.0"
    assert config["ACS_KAFKA_IDEMPOTENCE"] == "true"  # real Kafka in production
    # Every service URL names a Service of this render, on its port.
    services = by_kind(docs, "Service")
    for name in ("inventory", "orchestrator", "fileserver", "console"):
        assert config[f"ACS_{name.upper()}_URL"] == f"http://acs-{name}:{SERVICES[name]}"
        assert f"acs-{name}" in services


# --- Ingress ---------------------------------------------------------------------------------------
def nginx_route(ingresses: list[dict], host: str, path: str) -> tuple[str, str] | None:
    """(service, port name) that ingress-nginx would pick for host + path.

    ingress-nginx merges the paths of every Ingress for a host; when any of them sets use-regex
    they are all case-insensitive regexes anchored at the start, tried longest first.
    """
    entries: list[tuple[str, dict]] = []
    regex = False
    for ingress in ingresses:
        annotations = ingress["metadata"].get("annotations") or {}
        for rule in ingress["spec"]["rules"]:
            if rule.get("host") != host:
                continue
            regex = regex or annotations.get("nginx.ingress.kubernetes.io/use-regex") == "true"
            entries += [(p["path"], p["backend"]["service"]) for p in rule["http"]["paths"]]
    entries.sort(key=lambda entry: len(entry[0]), reverse=True)
    for pattern, backend in entries:
        matched = (re.match(pattern, path, re.IGNORECASE) if regex
                   else path == pattern or path.startswith(pattern.rstrip("/") + "/"))
        if matched:
            return backend["name"], backend["port"]["name"]
    return None


API_ROUTES = {
    "/api/v1/devices/ABC-Router-123/tasks": "acs-orchestrator",
    "/api/v1/devices/ABC-Router-123/tasks/65f0": "acs-orchestrator",
    "/api/v1/devices/ABC-Router-123/connection-request": "acs-orchestrator",
    "/api/v1/devices": "acs-inventory",
    "/api/v1/devices/ABC-Router-123": "acs-inventory",
    "/api/v1/devices/ABC-Router-123/tags/lab": "acs-inventory",
    "/api/v1/devices/ABC-Router-123/tasksx": "acs-inventory",
    "/api/v1/credentials/ABC-Router-123": "acs-inventory",
    "/api/v1/tasks": "acs-orchestrator",
    "/api/v1/tasks/65f0": "acs-orchestrator",
    "/api/v1/jobs": "acs-orchestrator",
    "/api/v1/policies/p1": "acs-orchestrator",
    "/api/v1/profiles/p1/preview": "acs-orchestrator",
    "/api/v1/quirks/q1": "acs-orchestrator",
    "/api/v1/devices/ABC-Router-123/desired": "acs-orchestrator",
    "/api/v1/devices/ABC-Router-123/variables": "acs-orchestrator",
    "/api/v1/campaigns/c1/pause": "acs-orchestrator",
    "/api/v1/apikeys": "acs-orchestrator",
    "/api/v1/users/alice/password": "acs-orchestrator",
    "/api/v1/sessions": "acs-orchestrator",
    "/api/v1/audit": "acs-orchestrator",
    "/api/v1/files": "acs-fileserver",
    "/api/v1/files/fw-1.2.3.bin": "acs-fileserver",
    "/api/v1/stats/tasks": "acs-orchestrator",
    "/api/v1/stats/devices": "acs-inventory",
}


def test_ingress_routes_like_the_design(manifests: Manifests) -> None:
    ingresses = list(by_kind(manifests["small"], "Ingress").values())
    for ingress in ingresses:
        assert ingress["spec"]["ingressClassName"] == "nginx"
    for path, service in API_ROUTES.items():
        assert nginx_route(ingresses, "api.example.net", path) == (service, "http"), path
    assert nginx_route(ingresses, "api.example.net", "/api/v1/unknown") is None
    # The merged API document and its docs pages: the router serves them in compose, the orchestrator here.
    for path in ("/api/v1/openapi.json", "/api/v1/docs", "/api/v1/docs/assets/swagger-ui.css", "/api/v1/redoc"):
        assert nginx_route(ingresses, "api.example.net", path) == ("acs-orchestrator", "http"), path
    # The console on the API's host (one origin for the page and the API it calls).
    for path in ("/", "/console/", "/console/assets/app.js", "/console/api/session"):
        assert nginx_route(ingresses, "api.example.net", path) == ("acs-console", "http"), path
    assert nginx_route(ingresses, "cwmp.example.net", "/") == ("acs-gateway", "cwmp")
    assert nginx_route(ingresses, "cwmp.example.net", "/acs") == ("acs-gateway", "cwmp")
    assert nginx_route(ingresses, "files.example.net", "/download/fw.bin") == ("acs-fileserver", "downloads")
    api = by_kind(manifests["small"], "Ingress")["acs-api"]
    assert all(p["pathType"] == "ImplementationSpecific" for p in api["spec"]["rules"][0]["http"]["paths"])


def test_ingress_agrees_with_the_router(manifests: Manifests) -> None:
    """The compose router and the Kubernetes Ingress send every API path to the same service."""
    router = pytest.importorskip("services.router.app")
    settings_module = pytest.importorskip("services.common.settings")
    settings = settings_module.Settings()
    by_url = {str(getattr(settings, f"{name}_url")).rstrip("/"): f"acs-{name}"
              for name in ("orchestrator", "inventory", "fileserver")}
    ingresses = list(by_kind(manifests["small"], "Ingress").values())
    for path in [*API_ROUTES, "/api/v1/unknown", "/api/v1/devicesx"]:
        upstream = router.upstream_for(path, settings)
        routed = nginx_route(ingresses, "api.example.net", path)
        assert (by_url[upstream] if upstream else None) == (routed[0] if routed else None), path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_backends_exist(overlay: str, manifests: Manifests) -> None:
    services = by_kind(manifests[overlay], "Service")
    for ingress in by_kind(manifests[overlay], "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                port_names = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in port_names


# --- optional parts: ServiceMonitor component, operator examples, prometheus-adapter ----------------
def test_servicemonitor_component_selects_every_service(
        tmp_path: Path, kustomize: Render,
        k8s_validate: Validate, manifests: Manifests) -> None:
    overlay = tmp_path / "with-monitoring"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "acs",  # as in the overlays, which the component is meant to be added to
        "resources": [os.path.relpath(DEPLOY / "overlays" / "small", overlay)],
        "components": [os.path.relpath(DEPLOY / "components" / "servicemonitor", overlay)],
    }))
    result = kustomize(overlay)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "acs"
    # Built-in kinds still validate strictly; the CRD kind only draws a warning.
    validated = k8s_validate(result.stdout)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in by_kind(manifests["small"], "Service").values()
                if selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in selected} == {f"acs-{name}" for name in SERVICES}
    endpoint_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    for service in selected:
        assert endpoint_ports <= {p["name"] for p in service["spec"]["ports"]}


OPERATOR_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "MongoDBCommunity", "Tenant", "Secret"}


def test_operator_examples_are_wellformed_and_match_the_settings(
        kustomize: Render,
        k8s_validate: Validate, manifests: Manifests) -> None:
    folder = DEPLOY / "examples" / "operators"
    files = sorted(folder.glob("*.yaml"))
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(f.name for f in files if f.name != "kustomization.yaml")
    result = kustomize(folder)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] in OPERATOR_KINDS and doc["metadata"]["name"], doc
    # The built-in kinds among them (Secrets) validate strictly; the CRs need their CRDs.
    builtins = yaml.safe_dump_all([d for d in docs if d["kind"] == "Secret"])
    validated = k8s_validate(builtins)
    assert validated.returncode == 0, validated.stdout + validated.stderr

    config = settings_map(manifests["small"])
    (kafka,) = [d for d in docs if d["kind"] == "Kafka"]
    assert config["ACS_KAFKA_BOOTSTRAP"] == f"{kafka['metadata']['name']}-kafka-bootstrap:9092"
    topics = {d["spec"]["topicName"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
    assert set(topics) == TOPICS
    assert topics["cwmp.inbound"]["partitions"] == int(config["ACS_KAFKA_PARTITIONS"])
    # One Kafka user per service, allowed exactly what it does: no service but the ACS's own
    # reads the internal topics (they carry the secrets of plans), and only the topics Job creates.
    acls = {d["metadata"]["name"]: {(a["resource"]["type"], a["resource"]["name"], op)
                                    for a in d["spec"]["authorization"]["acls"] for op in a["operations"]}
            for d in docs if d["kind"] == "KafkaUser"}
    assert {("topic", "cwmp.inbound", "Write"), ("topic", "cwmp.replies", "Read")} <= acls["acs-gateway"]
    assert {("topic", "cwmp.inbound", "Read"), ("group", "orchestrator", "Read"),
            ("topic", "cwmp.replies", "Write"), ("topic", "device.events", "Write")} <= acls["acs-orchestrator"]
    assert {("topic", "cwmp.inbound", "Read"), ("topic", "cwmp.inbound", "Write"), ("group", "inventory", "Read"),
            ("topic", "device.events", "Write")} <= acls["acs-inventory"]
    readers = {user for user, granted in acls.items() for kind, name, op in granted
               if kind == "topic" and name in ("cwmp.inbound", "cwmp.replies") and op == "Read"}
    assert readers == {"acs-gateway", "acs-orchestrator", "acs-inventory"}
    assert {user for user, granted in acls.items() if any(op == "Create" for *_, op in granted)} == {"acs-topics"}
    (tenant,) = [d for d in docs if d["kind"] == "Tenant"]
    assert {b["name"] for b in tenant["spec"]["buckets"]} == {config["ACS_S3_BUCKET"]}
    assert tenant["spec"]["requestAutoCert"] is False and config["ACS_S3_ENDPOINT"] == "minio:80"
    (mongo,) = [d for d in docs if d["kind"] == "MongoDBCommunity"]
    secret_url = by_kind(manifests["small"], "Secret")["acs-secrets"]["stringData"]["ACS_MONGODB_URL"]
    assert f"@{mongo['metadata']['name']}-svc:27017/" in secret_url
    assert f"replicaSet={mongo['metadata']['name']}" in secret_url


def test_prometheus_adapter_example_serves_the_hpa_metric() -> None:
    values = yaml.safe_load((DEPLOY / "examples" / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == SESSIONS_METRIC
    counter = re.match(r"\^?(\w+)\$?", rule["name"]["matches"]).group(1)
    assert counter in rule["seriesQuery"]
    gateway_metrics = REPO_ROOT / "services" / "gateway" / "metrics.py"
    if gateway_metrics.exists():
        assert f'"{counter}"' in gateway_metrics.read_text(), f"the gateway exports no {counter}"
