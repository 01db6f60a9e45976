"""The deployment files in deploy/ agree with Plinth and with each other: every setting
they give exists, every command parses as the CLI would parse it, ports and hosts line up,
and the tools that can check a file here (nginx, docker compose) accept it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from plinth.cli import app
from plinth.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
# compose's load balancers and their configurations
BALANCERS = {"lb": DEPLOY / "nginx.conf", "model-lb": DEPLOY / "nginx-models.conf"}
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
# What the object store's client reads (boto3, s3fs, deltalake), besides Plinth's settings.
OBJECT_STORE_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
# The credentials compose is to be given (it has no defaults for them).
CREDENTIALS = {"POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
# ${NAME:?message}: compose refuses to start without NAME
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")


def plinth_env_names() -> set[str]:
    """Settings' variables, and the few Plinth reads itself (PLINTH_S3_ENDPOINT_URL, the
    scheduler's lease...): names written out in its source."""
    names = {f"PLINTH_{name.upper()}" for name in Settings.model_fields}
    for source in (ROOT / "src" / "plinth").rglob("*.py"):
        names.update(re.findall(r"\"(PLINTH_[A-Z0-9_]+)\"", source.read_text()))
    return names


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services_running(program: str) -> dict[str, dict[str, Any]]:
    """Compose's services of a Plinth image whose command runs ``program``."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image", "").startswith("plinth") and service["command"][0] == program
    }


def plinth_services() -> dict[str, dict[str, Any]]:
    return services_running("plinth")


def k8s_documents() -> list[dict[str, Any]]:
    return [
        doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
    ]


def k8s_containers(program: str = "plinth") -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) of every Deployment, Job and CronJob whose command runs
    ``program``."""
    found: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for doc in k8s_documents():
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        elif doc["kind"] not in ("Deployment", "Job"):
            continue
        containers = spec["template"]["spec"]["containers"]
        found.extend((doc, c) for c in containers if c["command"][0] == program)
    return found


def parse_command(argv: list[str]) -> Any:
    """Parse ``plinth ...`` as the CLI does (options, arguments, types), without running it;
    a usage error raises (typer's own click, which it vendors)."""
    assert argv[0] == "plinth", argv
    command: Any = typer.main.get_command(app)
    args = argv[1:]
    while hasattr(command, "list_commands"):  # a group: the next word names a command
        name, args = args[0], args[1:]
        found = command.get_command(typer.Context(command), name)
        assert found is not None, f"plinth has no command {name!r}: {argv}"
        command = found
    return command.make_context(argv[-1], list(args))


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def port_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


def dockerfile_json(instruction: str) -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = re.search(rf"^{instruction}\s+.*?(\[.*\])\s*$", text, re.MULTILINE)
    assert found is not None, instruction
    return list(json.loads(found.group(1)))


# -- settings ----------------------------------------------------------------------------


def test_every_setting_the_files_give_exists_and_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    known = plinth_env_names() | OBJECT_STORE_ENV
    given: dict[str, str] = {}
    for name, service in plinth_services().items():
        env = service.get("environment", {})
        assert set(env) <= known, f"compose service {name}: {set(env) - known}"
        given.update({k: str(v) for k, v in env.items()})
    for doc in k8s_documents():
        if doc["kind"] in ("ConfigMap", "Secret"):
            data = doc.get("data") or doc.get("stringData") or {}
            assert set(data) <= known, (
                f"{doc['kind']} {doc['metadata']['name']}: {set(data) - known}"
            )
            given.update(data)
    # their values are ones Plinth's settings take
    for name in (
        n for n in given if n.upper().removeprefix("PLINTH_").lower() in Settings.model_fields
    ):
        monkeypatch.setenv(name, REQUIRED.sub("example", given[name]))
    settings = load_settings()
    assert settings.store_uri is not None and settings.store_uri.startswith("postgresql+psycopg://")
    assert settings.artifact_uri is not None and settings.artifact_uri.startswith("s3://")
    assert settings.online_uri is not None and settings.online_uri.startswith("redis://")
    assert settings.spark_master.startswith("spark://")


def test_the_image_installs_the_extras_that_exist() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    default = re.search(r"^ARG EXTRAS=(\S+)$", text, re.MULTILINE)
    assert default is not None and {"postgres", "s3", "redis"} <= set(default.group(1).split(","))
    chosen = [default.group(1)] + [
        str(s["build"]["args"]["EXTRAS"]) for s in compose()["services"].values() if "build" in s
    ]
    for extras_list in chosen:
        assert set(extras_list.split(",")) <= set(extras), extras_list
    assert re.search(r"^USER plinth$", text, re.MULTILINE)  # never root


# -- commands ----------------------------------------------------------------------------


def test_every_command_is_a_plinth_command_that_parses() -> None:
    commands = [dockerfile_json("CMD")]
    commands += [s["command"] for s in plinth_services().values()]
    commands += [c["command"] for _, c in k8s_containers()]
    for argv in commands:
        parse_command(argv)
    used = {tuple(a[1:3]) if a[1] == "db" else (a[1],) for a in commands}
    assert {("server",), ("serve",), ("router",), ("scheduler",), ("db", "upgrade")} <= used


def test_a_wrong_command_or_option_does_not_parse() -> None:
    with pytest.raises(AssertionError, match="no command"):
        parse_command(["plinth", "serverr"])
    for wrong in (["server", "--prot", "5151"], ["serve"], ["scheduler", "--lease", "soon"]):
        with pytest.raises(Exception) as refused:
            parse_command(["plinth", *wrong])
        assert getattr(refused.value, "exit_code", None) == 2, wrong  # a usage error


def test_every_service_waits_for_the_migration_job() -> None:
    services = plinth_services()
    assert services["migrate"]["command"] == ["plinth", "db", "upgrade"]
    for name, service in services.items():
        if name != "migrate":
            waits = service["depends_on"]["migrate"]["condition"]
            assert waits == "service_completed_successfully", name
    jobs = [c["command"] for d, c in k8s_containers() if d["kind"] == "Job"]
    assert jobs == [["plinth", "db", "upgrade"]]


def test_the_k8s_migration_job_is_a_new_job_per_image_tag() -> None:
    """A Job's pod template cannot change: applying a new image to the old Job would fail,
    so kustomize names it after the tag. (kubectl, where installed, builds it.)"""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    docs = list(yaml.safe_load_all(built.stdout))
    tags = {
        i["name"]: i["newTag"]
        for i in yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]
    }
    jobs = [d for d in docs if d["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in jobs] == [f"plinth-db-upgrade-{tags['plinth']}"]
    image = jobs[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f"/plinth:{tags['plinth']}"), image


def test_the_topology_has_its_replicas() -> None:
    services = plinth_services()
    verbs = [s["command"][1] for s in services.values()]
    assert verbs.count("server") == 2 and verbs.count("scheduler") == 2
    model = services["model-churn-1"]["command"]
    assert model[:3] == ["plinth", "serve", "models:/churn@production"]
    # the challenger, one replica; compose and k8s route the same arms to the same models
    served = {c["command"][2]: w for w, c in k8s_containers() if c["command"][1] == "serve"}
    assert sorted(served) == ["models:/churn@challenger", "models:/churn@production"]
    assert services["model-challenger"]["command"][2] == "models:/churn@challenger"
    for workload, _ in k8s_containers():
        if workload["kind"] == "Deployment":
            challenger = served["models:/churn@challenger"]["metadata"]["name"]
            wanted = 1 if workload["metadata"]["name"] == challenger else 2
            assert workload["spec"]["replicas"] == wanted, workload["metadata"]["name"]

    def arms(argv: list[str]) -> list[str]:
        return [a.split("=")[0] for i, a in enumerate(argv) if argv[i - 1] == "--arm-url"]

    (k8s_router,) = [c["command"] for _, c in k8s_containers() if c["command"][1] == "router"]
    assert arms(k8s_router) == arms(services["router"]["command"]) == ["champion", "challenger"]


# -- ports and hosts ---------------------------------------------------------------------


def nginx_upstreams(config: Path) -> dict[str, list[tuple[str, int]]]:
    text = config.read_text()
    found = {}
    for name, body in re.findall(r"upstream (\w+) \{(.*?)\}", text, re.DOTALL):
        found[name] = [(h, int(p)) for h, p in re.findall(r"server ([\w.-]+):(\d+)", body)]
    return found


def nginx_listens(config: Path) -> dict[int, str]:
    """Port -> the upstream its server block proxies to."""
    text = config.read_text()
    blocks = re.findall(r"listen (\d+);(.*?)proxy_pass http://(\w+);", text, re.DOTALL)
    return {int(port): upstream for port, _, upstream in blocks}


def test_compose_ports_line_up() -> None:
    services = plinth_services()
    listening = {
        name: int(option(s["command"], "--port"))
        for name, s in services.items()
        if "--port" in s["command"]
    }
    listens: dict[str, set[int]] = {}
    for balancer, config in BALANCERS.items():
        lb = compose()["services"][balancer]
        assert lb["volumes"] == [f"./{config.name}:/etc/nginx/nginx.conf:ro"]
        for upstream, servers in nginx_upstreams(config).items():
            assert servers, upstream
            for host, port in servers:
                assert listening.get(host) == port, f"{config.name} {upstream}: {host}:{port}"
        listens[balancer] = set(nginx_listens(config))
        assert {int(p.rsplit(":", 1)[1]) for p in lb["ports"]} == listens[balancer], balancer
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # a one-shot job
        check = service["healthcheck"]
        if check.get("disable"):
            continue
        assert port_of(check["test"][-1])[1] == listening[name], name
    router = services["router"]["command"]
    for arm in (a for i, a in enumerate(router) if router[i - 1] == "--arm-url"):
        host, port = port_of(arm.split("=", 1)[1])
        assert port in listens[host] if host in listens else listening[host] == port, arm


def test_the_image_serves_where_it_says() -> None:
    cmd = dockerfile_json("CMD")
    exposed = re.search(r"^EXPOSE (\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert exposed is not None and option(cmd, "--port") == exposed.group(1)
    check = re.search(r'"(http://127\.0\.0\.1:(\d+)/health)"', DOCKERFILE.read_text())
    assert check is not None and check.group(2) == exposed.group(1)
    assert "--auth" in cmd  # off loopback the server refuses to run without it


def test_k8s_ports_probes_and_config_line_up() -> None:
    docs = k8s_documents()
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    configs = {d["metadata"]["name"] for d in docs if d["kind"] in ("ConfigMap", "Secret")}
    for workload, container in k8s_containers():
        name = workload["metadata"]["name"]
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == configs, name
        if "--port" not in container["command"]:
            continue
        port = int(option(container["command"], "--port"))
        assert [p["containerPort"] for p in container["ports"]] == [port], name
        if container["command"][1] in ("server", "serve"):
            assert container["readinessProbe"]["httpGet"]["path"] == "/ready", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/health", name
        service = services[name]
        assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    for _, container in k8s_containers():
        argv = container["command"]
        for arm in (a for i, a in enumerate(argv) if argv[i - 1] == "--arm-url"):
            host, port = port_of(arm.split("=", 1)[1])
            assert [p["port"] for p in services[host]["spec"]["ports"]] == [port], arm
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


# -- who is given what, and who listens where ----------------------------------------------


def test_compose_has_no_default_credentials() -> None:
    text = COMPOSE.read_text()
    for name in CREDENTIALS:
        assert not re.search(rf"\$\{{{name}(:?-|\}})", text), f"{name} has a default"
        assert re.search(rf"\$\{{{name}:\?", text), f"{name} is not required"
    given = {
        k: v for s in compose()["services"].values() for k, v in s.get("environment", {}).items()
    }
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        assert REQUIRED.fullmatch(str(given[name])), name


def test_compose_publishes_only_the_api_beyond_this_host() -> None:
    published = {
        name: service["ports"]
        for name, service in compose()["services"].items()
        if service.get("ports")
    }
    for name, ports in published.items():
        for port in ports:
            if name == "lb":
                assert port == "5151:80"  # the servers need a token (--auth)
            else:
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every address"
    assert {"minio", "router", "model-lb", "spark-master"} <= set(published)


def test_only_the_services_that_need_the_store_get_its_uri() -> None:
    services = plinth_services()
    with_store = {n for n, s in services.items() if "PLINTH_STORE_URI" in s["environment"]}
    with_keys = {n for n, s in services.items() if "AWS_SECRET_ACCESS_KEY" in s["environment"]}
    assert with_store == set(services)  # every Plinth service reads the store (the header)
    assert with_keys == set(services) - {"migrate", "router"}
    assert set(services["router"]["environment"]) == {"PLINTH_STORE_URI"}
    assert set(services["migrate"]["environment"]) == {"PLINTH_STORE_URI"}


def test_plinth_auth_is_only_claimed_for_the_server() -> None:
    """PLINTH_AUTH is the server's setting; ``plinth serve`` has its own --auth flag."""
    assert "auth" in Settings.model_fields
    serve = parse_command(["plinth", "serve", "models:/m@production"])
    assert "auth" in serve.params and serve.params["auth"] is False
    config = (K8S / "config.yaml").read_text()
    (line,) = [line for line in config.splitlines() if "PLINTH_AUTH" in line]
    assert "`plinth server` only" in line


# -- Spark for batch jobs ----------------------------------------------------------------

SPARK_MASTER_CLASS = "org.apache.spark.deploy.master.Master"
SPARK_WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def master_url(host: str, port: int) -> str:
    return f"spark://{host}:{port}"


def test_compose_runs_batch_jobs_on_its_spark_cluster() -> None:
    spark = services_running("spark-class")
    masters = [n for n, s in spark.items() if s["command"][1] == SPARK_MASTER_CLASS]
    workers = [n for n, s in spark.items() if s["command"][1] == SPARK_WORKER_CLASS]
    assert len(masters) == 1 and len(workers) == 2 and len(spark) == 3
    master = masters[0]
    url = master_url(master, int(option(spark[master]["command"], "--port")))
    for name in workers:
        assert spark[name]["command"][2] == url, name
        assert spark[name]["depends_on"][master]["condition"] == "service_healthy", name
    # every Plinth service told to use Spark uses this cluster, and starts after its workers
    users = {
        n: s for n, s in plinth_services().items() if "PLINTH_SPARK_MASTER" in s["environment"]
    }
    assert list(users) == ["batch-score"]
    for name, service in users.items():
        assert service["environment"]["PLINTH_SPARK_MASTER"] == url, name
        assert {w: "service_healthy" for w in workers} == {
            w: service["depends_on"][w]["condition"] for w in workers
        }
    # the driver and the workers run one image, with Java and the spark extra (pyspark
    # brings spark-class), so that the workers' Python can run what the driver sends
    for name in [*spark, *users]:
        service = compose()["services"][name]
        assert service["image"] == "plinth-batch:0.1.0", name
        assert "spark" in service["build"]["args"]["EXTRAS"].split(","), name
        assert service["build"]["args"]["WITH_JAVA"] == "true", name
        check = service.get("healthcheck", {}).get("test")
        if name in spark:  # the master's and workers' web UI, on the port they are given
            assert port_of(check[-1])[1] == int(option(service["command"], "--webui-port"))


def test_k8s_runs_batch_jobs_on_its_spark_cluster() -> None:
    docs = k8s_documents()
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    spark = k8s_containers("spark-class")
    masters = [(w, c) for w, c in spark if c["command"][1] == SPARK_MASTER_CLASS]
    workers = [(w, c) for w, c in spark if c["command"][1] == SPARK_WORKER_CLASS]
    assert len(masters) == 1 and len(workers) == 1 and len(spark) == 2
    (master, container), (worker, worker_container) = masters[0], workers[0]
    assert master["spec"]["replicas"] == 1 and worker["spec"]["replicas"] == 2
    service = services[master["metadata"]["name"]]
    assert service["spec"]["selector"] == master["spec"]["selector"]["matchLabels"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["spark"] == int(option(container["command"], "--port"))
    by_name = {p["targetPort"]: p["port"] for p in service["spec"]["ports"]}
    url = master_url(service["metadata"]["name"], by_name["spark"])
    assert config["PLINTH_SPARK_MASTER"] == url
    assert worker_container["command"][2] == url
    # pods that start Spark jobs and the cluster run the batch image
    images = {i["name"] for i in yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]}
    assert "plinth-batch" in images
    for workload, found in [*spark, *k8s_containers()]:
        if workload["metadata"]["name"] in (
            "plinth-scheduler",
            "plinth-batch-score",
            *(w["metadata"]["name"] for w, _ in spark),
        ):
            assert found["image"] == "plinth-batch", workload["metadata"]["name"]
    # compose's batch-score job is a CronJob here, the same command; drivers in a pod give
    # executors the pod's address
    (cron,) = [(w, c) for w, c in k8s_containers() if w["kind"] == "CronJob"]
    assert cron[1]["command"] == compose()["services"]["batch-score"]["command"]
    for workload, found in k8s_containers():
        if found["image"] == "plinth-batch":
            env = {e["name"]: e for e in found.get("env", [])}
            pod_ip = env["SPARK_LOCAL_IP"]["valueFrom"]["fieldRef"]["fieldPath"]
            assert pod_ip == "status.podIP", workload["metadata"]["name"]


def nginx_version() -> tuple[int, ...] | None:
    if shutil.which("nginx") is None:
        return None
    shown = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", shown)
    assert found is not None, shown
    return tuple(int(part) for part in found.groups())


@pytest.mark.parametrize("config", BALANCERS.values(), ids=lambda p: p.name)
def test_nginx_fails_over_on_connection_errors_only_and_re_resolves(config: Path) -> None:
    text = config.read_text()
    (next_upstream,) = re.findall(r"proxy_next_upstream ([^;]*);", text)
    # a 503 is an answer (the store timed out, a model is not ready), never a reason to set a
    # replica aside or to send a write twice
    assert next_upstream.split() == ["error", "timeout"]
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=10s\b", text, re.MULTILINE)
    for name, body in re.findall(r"upstream (\w+) \{(.*?)\}", text, re.DOTALL):
        assert re.search(rf"^\s*zone {name} \w+;", body, re.MULTILINE), name
        servers = re.findall(r"^\s*server (\S+) (.*);", body, re.MULTILINE)
        assert len(servers) == 2, name
        for host, params in servers:
            assert "resolve" in params.split(), host
            fails = re.search(r"max_fails=(\d+)", params)
            assert fails is not None and int(fails.group(1)) >= 2, host
    image = compose()["services"][next(b for b, c in BALANCERS.items() if c == config)]["image"]
    assert tuple(int(p) for p in image.split(":")[1].split(".")) >= (1, 28), image


# -- the tools' own checks, where they are installed --------------------------------------


@pytest.mark.parametrize("config", BALANCERS.values(), ids=lambda p: p.name)
def test_nginx_accepts_its_config(tmp_path: Path, config: Path) -> None:
    version = nginx_version()
    if version is None:
        pytest.skip("nginx is not installed")
    # compose's host names do not resolve here: the same file on loopback addresses
    text = re.sub(r"server [\w-]+:(\d+)", r"server 127.0.0.1:\1", config.read_text())
    if version < (1, 27, 3):  # no `resolve` on upstream servers yet: the rest is checked
        text = re.sub(r" resolve\b", "", text)
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    checked = subprocess.run(
        [
            "nginx",
            "-t",
            "-q",
            "-c",
            str(config),
            "-g",
            f"pid {tmp_path}/nginx.pid; error_log stderr;",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_docker_compose_accepts_the_compose_file(tmp_path: Path) -> None:
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        command = ["docker", "compose"]
    else:
        pytest.skip("docker compose is not installed")
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    argv = [*command, "-f", str(COMPOSE), "--project-directory", str(tmp_path), "config", "-q"]
    refused = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD" in refused.stderr, refused.stderr
    env.update(dict.fromkeys(CREDENTIALS, "example"))
    checked = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    assert checked.returncode == 0, checked.stderr
