"""`dlforge package`: a finished run as a Docker build context, with manifests to deploy it.

    <out>/
        Dockerfile             python:<this Python>-slim (CUDA base: --gpu), dlforge, uid 10001; runs `dlforge serve`
        install/               the running dlforge's wheel; requirements.txt: the versions it runs with here
                               (requirements-cuda.txt with --gpu: torch's CUDA runtime)
        model/                 the run directory, only what serving reads
        k8s/                   deployment.yaml, service.yaml, hpa.yaml, pdb.yaml
        kserve/                inferenceservice.yaml (Open Inference Protocol V2)
        example.json           {"instances": [...]} for this model; example-v2.json, its V2 form
        README.md              build, run, call; deploy on Kubernetes, KServe, SageMaker, Vertex AI, Azure ML

The context is built in a hidden sibling folder and renamed into place: `out` is never half written.
YAML is written with PyYAML; only the Dockerfile and the README are text templates.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, distribution
from importlib.metadata import version as installed_version
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import unquote, urlparse

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from dlforge.errors import DlforgeError
from dlforge.onnx_backend import ONNX_FILE, stale_reason
from dlforge.run import Run

# The Python that runs here: the pinned versions in install/requirements.txt are the ones installed for it.
CPU_BASE = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
# The torch wheel brings its own CUDA and cuDNN libraries: the image needs the driver hooks, not a second copy.
GPU_BASE = "nvidia/cuda:13.0.0-base-ubuntu24.04"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
PORT, UID = 8080, 10001
# What `dlforge serve` reads, by name: anything else in a run (checkpoints, plots, reports, another export's
# files, the temporary file of a write that was killed) stays out of the image.
SERVING_FILES = ("spec.yaml", "meta.json", "model.safetensors", "eval.json", "COMPLETE",
                 "profile/profile.json", "profile/reference.parquet")  # the drift reference of serve.monitor.window
ONNX_FILES = (str(ONNX_FILE), f"{ONNX_FILE}.json")  # --backend onnx; copied only when made from these weights
ASSETS = "assets"  # the task's own files (a tokenizer, ...), as it saved them; hidden files (temporaries) aside
# torch's requirements that hold on some platforms only: the CUDA runtime of its CUDA build. A CPU image has none
# (the CPU build, from CPU_TORCH_INDEX, needs none); a GPU image gets them from requirements-cuda.txt.
_PLATFORM_MARKER = re.compile(r"\b(platform_system|platform_machine|sys_platform|os_name)\b")
_DNS = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 40  # KServe and Knative append suffixes (-predictor-00001-deployment-...) within 63 characters
# An image reference, as the distribution spec writes it: [registry[:port]/]path[:tag][@sha256:digest]. Checked in
# full: it lands in the Dockerfile, where a newline would be an instruction of its own.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
                             r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?P<digest>@sha256:[0-9a-f]{64})?")


def package_run(run_dir: str | os.PathLike, out: str | os.PathLike, gpu: bool = False, name: str | None = None,
                image: str | None = None, wheel: str | os.PathLike | None = None, overwrite: bool = False,
                base_image: str | None = None, api_key: bool = False) -> Path:
    """Write the Docker build context of the finished run `run_dir` to `out`; returns `out`.

    `name` names the Kubernetes objects (default: the spec's name, made a DNS label); `image` is the image
    reference the manifests and README use (default `<name>:<dlforge version>`); `wheel`, a dlforge wheel to
    install instead of the running dlforge's (built from its source tree, or the wheel it was installed from).
    Either way the image gets the versions of dlforge's dependencies installed here (`install/requirements.txt`).
    `base_image` replaces the moving default tag, best pinned by digest (`python:3.12-slim@sha256:...`). With
    `api_key`, the manifests require the API-key Secret: without it the pods do not start (rather than serve
    everyone, as an optional Secret lets them).
    """
    if base_image is not None and not IMAGE_REFERENCE.fullmatch(base_image):
        raise DlforgeError(f"--base-image {base_image!r}: not an image reference (e.g. "
                           f"{CPU_BASE}@sha256:<64 hex digits>)")
    run, out = Run.open(run_dir), Path(out)
    if not run.weights_path.is_file():
        raise DlforgeError(f"{run.path}: no model.safetensors to package")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise DlforgeError(f"{out}: exists and is not an empty folder (pass overwrite to replace it)")
    wheel = Path(wheel) if wheel is not None else None
    if wheel is not None and not (wheel.is_file() and wheel.name.endswith(".whl")):
        raise DlforgeError(f"{wheel}: not a wheel file (.whl)")

    meta, spec = run.read_meta(), yaml.safe_load(run.spec_path.read_text())
    name = _checked_name(name) if name else dns_label(spec.get("name") or run.path.name)
    v, pins = installed_version("dlforge"), installed_requirements()
    cuda = {k: pin for k, pin in installed_requirements(cuda=True).items() if k not in pins} if gpu else None
    ctx = {"name": name, "image": image or f"{name}:{v}", "version": v, "task": meta["task"], "gpu": gpu,
           "torch": pins.get("torch"),
           "run_name": run.path.name, "model_name": spec.get("name") or name,
           "base": base_image or (GPU_BASE if gpu else CPU_BASE), "api_key": api_key,
           "memory_mi": _memory_mi(run.weights_path.stat().st_size)}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)
        _copy_model(run, tmp / "model")
        (tmp / "install").mkdir()
        if wheel is not None:
            shutil.copy2(wheel, tmp / "install" / wheel.name)
        wheel_name = wheel.name if wheel is not None else dlforge_wheel(tmp / "install")
        (tmp / "install" / "requirements.txt").write_text(requirements_txt(pins, "every package dlforge needs"))
        if cuda is not None:
            (tmp / "install" / "requirements-cuda.txt").write_text(requirements_txt(cuda, "torch's CUDA runtime"))
        (tmp / "Dockerfile").write_text(dockerfile(ctx, wheel_name))
        (tmp / ".dockerignore").write_text("k8s/\nkserve/\nREADME.md\nexample*.json\n")
        for path, doc in manifests(ctx).items():
            (tmp / path).parent.mkdir(exist_ok=True)
            (tmp / path).write_text(yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False))
        example = example_instance(meta)
        _write_json(tmp / "example.json", {"instances": [example]})
        _write_json(tmp / "example-v2.json", {"inputs": [v2_input(example)]})
        (tmp / "README.md").write_text(readme(ctx, meta, example))
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------- names


def dns_label(text: str) -> str:
    """A DNS-1035 label (lowercase letters, digits, '-', starting with a letter) of at most MAX_NAME characters."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    label = re.sub(r"^[^a-z]+", "", label)[:MAX_NAME].rstrip("-")
    return label or "model"


def _checked_name(name: str) -> str:
    if len(name) > MAX_NAME or not _DNS.fullmatch(name):
        raise DlforgeError(f"name {name!r}: must be lowercase letters, digits and '-', start with a letter, end "
                           f"with a letter or digit, at most {MAX_NAME} characters (e.g. {dns_label(name)!r})")
    return name


# ---------------------------------------------------------------- the Dockerfile


def dockerfile(ctx: dict[str, Any], wheel: str | None = None) -> str:
    # A bind mount: install/ is read at build time and never lands in a layer. dlforge==<version> only when the
    # running dlforge came from a package index: the image gets it there too.
    dlforge = f"/tmp/install/{wheel}" if wheel else f'"dlforge=={ctx["version"]}"'
    comment = ("# install/requirements*.txt: every package dlforge needs, at the version it ran with when packaged;\n"
               "# --no-deps installs that set as it is (it is resolved already).\n")
    if ctx["gpu"]:
        setup = ("RUN apt-get update \\\n && apt-get install -y --no-install-recommends python3 python3-venv \\\n"
                 " && rm -rf /var/lib/apt/lists/* \\\n && python3 -m venv /opt/venv")
        pip = f"-r /tmp/install/requirements.txt -r /tmp/install/requirements-cuda.txt {dlforge}"
        if ctx["torch"]:
            comment += ("# The second pip adds what torch's CUDA build needs and requirements-cuda.txt lacks:\n"
                        "# nothing, unless dlforge was packaged where another torch build ran.\n")
            pip += f" \\\n && pip install --no-cache-dir torch=={ctx['torch']}"
    else:  # torch==<version> is the CPU build there: no CUDA runtime in the image
        setup = "RUN python -m venv /opt/venv"
        pip = f"--extra-index-url {CPU_TORCH_INDEX} -r /tmp/install/requirements.txt {dlforge}"
    install = (f"{comment}RUN --mount=type=bind,source=install,target=/tmp/install \\\n"
               f"    pip install --no-cache-dir --no-deps {pip}")
    digest = IMAGE_REFERENCE.fullmatch(ctx["base"])
    digest = digest.group("digest") if digest else None
    if digest:
        pinned = "# The base image pinned by its digest: every build starts from the same bytes.\n"
    else:
        pinned = (f"# {ctx['base']} is a moving tag: its publisher re-points it at each patch release, so two builds\n"
                  "# of this context can start from different images. To pin it, package with\n"
                  f"# --base-image {ctx['base']}@sha256:<digest> (`docker buildx imagetools inspect "
                  f"{ctx['base']}`\n# prints the digest).\n")
    labels = f'      org.opencontainers.image.base.digest="{digest[1:]}" \\\n' if digest else ""
    return _template("Dockerfile.in").substitute(ctx, python_setup=setup, install=install, base_pinned=pinned,
                                                 base_digest_label=labels)


# ---------------------------------------------------------------- what the image installs


def installed_requirements(root: str = "dlforge", cuda: bool = False) -> dict[str, str]:
    """name -> version of every distribution `root` needs, as installed here: its requirements, theirs, and so
    on, with markers and extras evaluated for this Python. A requirement that is not installed is left out (uv's
    override-dependencies in pyproject.toml drops some), and so are torch's platform-only ones (_PLATFORM_MARKER)
    unless `cuda`. Local version labels are dropped: `torch==2.x` is the CPU build from the CPU index, the CUDA
    build from PyPI."""
    pins: dict[str, str] = {}
    todo, seen = [(canonicalize_name(root), "")], set()
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        if name != canonicalize_name(root):
            pins[name] = Version(dist.version).public
        for req in map(Requirement, dist.requires or []):
            if req.marker is not None and (not req.marker.evaluate({"extra": extra}) or (
                    not cuda and name == "torch" and _PLATFORM_MARKER.search(str(req.marker)))):
                continue
            dep = canonicalize_name(req.name)
            todo += [(dep, ""), *((dep, canonicalize_name(e)) for e in req.extras)]
    return dict(sorted(pins.items()))


def requirements_txt(pins: dict[str, str], what: str) -> str:
    return (f"# {what}, as dlforge {installed_version('dlforge')} ran with them when `dlforge package` wrote this "
            f"(Python {sys.version_info.major}.{sys.version_info.minor}).\n"
            "# Installed with --no-deps: the set is resolved as it is.\n"
            + "".join(f"{name}=={v}\n" for name, v in pins.items()))


def dlforge_wheel(dest: Path) -> str | None:
    """Put the wheel of the running dlforge in `dest` and return its file name: built from the source tree it
    runs from (an editable or a local-folder install), or the wheel file it was installed from. None when it
    came from a package index: the image installs it from there."""
    dist = distribution("dlforge")
    origin = dist.read_text("direct_url.json")
    if origin is None:  # PEP 610: no direct_url.json, installed from an index
        return None
    url = json.loads(origin)
    where = Path(unquote(urlparse(url["url"]).path))
    if "dir_info" in url and (where / "pyproject.toml").is_file():
        return _build_wheel(where, dest)
    if "archive_info" in url and where.is_file() and where.suffix == ".whl":
        shutil.copy2(where, dest / where.name)
        return where.name
    raise DlforgeError(f"dlforge was installed from {url['url']}, which is no source tree or wheel file here: "
                       "pass --wheel with a dlforge wheel")


def _build_wheel(source: Path, dest: Path) -> str:
    # uv builds with the backend pyproject.toml names, in an isolated environment; `uv run` says which uv it is.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise DlforgeError(f"dlforge runs from its source tree {source}: building its wheel needs uv "
                           "(https://docs.astral.sh/uv/), or pass --wheel with a dlforge wheel")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([uv, "build", "--wheel", "--out-dir", tmp, str(source)], capture_output=True,
                              text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            why = (proc.stderr.strip().splitlines() or ["it wrote no wheel"])[-1]
            raise DlforgeError(f"{source}: `uv build --wheel` failed: {why}")
        shutil.move(wheels[0], dest / wheels[0].name)
        return wheels[0].name


def entrypoint_command(context: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """The argv (ENTRYPOINT + CMD, exec form) and the ENV of the Dockerfile in `context`: what the container
    runs. Variables in ENV values are not expanded."""
    path = Path(context) / "Dockerfile"
    if not path.is_file():
        raise DlforgeError(f"{path}: no Dockerfile")
    entrypoint: list[str] = []
    cmd: list[str] = []
    env: dict[str, str] = {}
    for line in re.sub(r"\\\n", " ", path.read_text()).splitlines():
        instruction, _, rest = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction in ("ENTRYPOINT", "CMD"):
            try:
                argv = json.loads(rest)
            except json.JSONDecodeError:
                argv = None
            if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
                raise DlforgeError(f"{path}: {instruction} is not in exec form (a JSON list of strings): {rest}")
            entrypoint, cmd = (argv, []) if instruction == "ENTRYPOINT" else (entrypoint, argv)
        elif instruction == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:  # the old `ENV KEY value` form
                env[words[0]] = " ".join(words[1:])
            else:
                env.update(w.split("=", 1) for w in words)
    if not entrypoint + cmd:
        raise DlforgeError(f"{path}: no ENTRYPOINT or CMD")
    return entrypoint + cmd, env


# ---------------------------------------------------------------- Kubernetes and KServe


def manifests(ctx: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """path in the context -> one Kubernetes object."""
    name = ctx["name"]
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/version": ctx["version"],
              "app.kubernetes.io/component": "model-server", "app.kubernetes.io/managed-by": "dlforge"}
    selector = {"app.kubernetes.io/name": name}
    meta = {"name": name, "labels": labels}
    volume_mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    container = {"name": "server", "image": ctx["image"], "imagePullPolicy": "IfNotPresent",
                 "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                 "env": _env(ctx, HOME="/tmp"), "resources": _resources(ctx),
                 "startupProbe": _probe("/health/live", period=5, failures=60),
                 "livenessProbe": _probe("/health/live", period=10, failures=3),
                 "readinessProbe": _probe("/health/ready", period=5, failures=2),
                 "securityContext": {**_container_security(), "readOnlyRootFilesystem": True},
                 "volumeMounts": volume_mounts}
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": selector}}]}
    if ctx["gpu"]:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"replicas": 2, "selector": {"matchLabels": selector},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
               "spec": {"type": "ClusterIP", "selector": selector,
                        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta,
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": 2, "maxReplicas": 10,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
           "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}}
    return {"k8s/deployment.yaml": deployment, "k8s/service.yaml": service, "k8s/hpa.yaml": hpa,
            "k8s/pdb.yaml": pdb, "kserve/inferenceservice.yaml": inference_service(ctx, labels)}


def inference_service(ctx: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """A KServe custom predictor: this image as `kserve-container`; the PROTOCOL env tells KServe it speaks V2.
    Knative (KServe's serverless mode) allows one port, no pod-level securityContext and, by default, no
    emptyDir: so the root filesystem stays writable here."""
    container = {"name": "kserve-container", "image": ctx["image"],
                 "ports": [{"containerPort": PORT, "protocol": "TCP"}],
                 "env": [{"name": "PROTOCOL", "value": "v2"}, *_env(ctx)], "resources": _resources(ctx),
                 "readinessProbe": _probe("/health/ready", period=5, failures=2),
                 "livenessProbe": _probe("/health/live", period=10, failures=3),
                 "securityContext": {**_container_security(), "runAsNonRoot": True, "runAsUser": UID}}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": ctx["name"], "labels": labels},
            "spec": {"predictor": {"minReplicas": 1, "maxReplicas": 10, "containers": [container]}}}


def _env(ctx: dict[str, Any], **extra: str) -> list[dict[str, Any]]:
    plain = {"DLFORGE_RUN": "/opt/ml/model", "DLFORGE_HOST": "0.0.0.0", "DLFORGE_PORT": str(PORT), **extra}
    # Asked for a key, the Secret is required: a pod without it does not start (CreateContainerConfigError). Not
    # asked, it is optional: a Secret made later turns the key on.
    ref = {"name": f"{ctx['name']}-api-key", "key": "api-key", **({} if ctx["api_key"] else {"optional": True})}
    key = {"name": "DLFORGE_API_KEY", "valueFrom": {"secretKeyRef": ref}}
    return [*({"name": k, "value": v} for k, v in plain.items()), key]


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": PORT}, "periodSeconds": period, "timeoutSeconds": 3,
            "failureThreshold": failures}


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _memory_mi(weights_bytes: int) -> int:
    """Memory request in MiB: a base for Python, torch and the server, plus 4x the weights; to 256 MiB steps."""
    need = 1024 + 4 * weights_bytes / 2**20
    return int(-(-need // 256) * 256)


def _resources(ctx: dict[str, Any]) -> dict[str, Any]:
    memory = ctx["memory_mi"]
    resources = {"requests": {"cpu": "500m", "memory": f"{memory}Mi"},
                 "limits": {"cpu": "2", "memory": f"{2 * memory}Mi"}}
    if ctx["gpu"]:
        resources["limits"]["nvidia.com/gpu"] = 1
    return resources


# ---------------------------------------------------------------- examples and the README


def example_instance(meta: dict[str, Any]) -> Any:
    """One request instance in the task's wire format: a base64 PNG, a text or a series."""
    from dlforge.registry import TASKS

    return TASKS.get(meta["task"]).wire.example(meta)


def v2_input(instance: Any) -> dict[str, Any]:
    """The instance as one Open Inference Protocol V2 input (BYTES: a base64 image, a text or a series' JSON)."""
    data = instance if isinstance(instance, str) else json.dumps(instance)
    return {"name": "input", "shape": [1], "datatype": "BYTES", "data": [data]}


def readme(ctx: dict[str, Any], meta: dict[str, Any], example: Any) -> str:
    classes = meta.get("classes")
    classes_line = ""
    if classes:
        shown = ", ".join(f"`{c}`" for c in classes[:20]) + (", ..." if len(classes) > 20 else "")
        classes_line = f"It predicts {len(classes)} classes: {shown}."
    shown_example = json.dumps({"instances": [example]}, indent=2)
    if len(shown_example) > 1500:
        shown_example = shown_example[:1500] + "\n..."
    gpu = ctx["gpu"]
    azure = {"$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
             "name": "blue", "endpoint_name": ctx["name"],
             "environment": {"image": f"MYREGISTRY.azurecr.io/{ctx['name']}:{ctx['version']}", "inference_config": {
                 "liveness_route": {"port": PORT, "path": "/health/live"},
                 "readiness_route": {"port": PORT, "path": "/health/ready"},
                 "scoring_route": {"port": PORT, "path": "/predict"}}},
             "instance_type": "Standard_NC4as_T4_v3" if gpu else "Standard_DS3_v2", "instance_count": 1}
    memory = ctx["memory_mi"]
    return _template("README.md.in").substitute(
        ctx, classes_line=classes_line, example=shown_example, azure_yaml=yaml.safe_dump(azure, sort_keys=False),
        instance_note=" (a base64 PNG; encode your own with `base64 -w0 image.png`)" if _is_png(example) else "",
        base_note=f"`{ctx['base']}`" + (" (the torch wheel brings CUDA and cuDNN)" if gpu else ""),
        gpu_flag="--gpus all " if gpu else "",
        secret_line="   # required: the pods do not start without it" if ctx["api_key"] else "   # optional",
        secret_note=f"\nThe Secret `{ctx['name']}-api-key` is required (packaged with `--api-key`): until it exists "
                    "the pods stay in `CreateContainerConfigError` rather than serve without a key.\n"
        if ctx["api_key"] else f"\nThe Secret `{ctx['name']}-api-key` is optional: without it the server answers "
                               "everyone. Package with `--api-key` to make it required.\n",
        gpu_note="\nThe host needs an NVIDIA driver recent enough for the CUDA of the torch wheel and the "
                 "NVIDIA Container Toolkit.\n" if gpu else "",
        resources_note=f"{memory} MiB of memory requested ({2 * memory} MiB limit), 0.5 to 2 CPUs"
                       + (" and one `nvidia.com/gpu`" if gpu else ""),
        sagemaker_instance="ml.g5.xlarge" if gpu else "ml.m5.xlarge",
        vertex_machine="n1-standard-8" if gpu else "n1-standard-4",
        vertex_gpu=" \\\n    --accelerator=type=nvidia-tesla-t4,count=1" if gpu else "")


def _is_png(example: Any) -> bool:
    return isinstance(example, str) and example.startswith("iVBORw0KGgo")  # b"\x89PNG\r\n\x1a\n" in base64


# ---------------------------------------------------------------- files


def _template(name: str) -> Template:
    return Template((files("dlforge") / "templates" / "package" / name).read_text())


def _copy_model(run: Run, dest: Path) -> None:
    """Copy what serving reads, world-readable: in the image it stays root's, and the server runs as uid 10001
    (the run's files have the mode its writer's umask gave: 0600 under umask 077)."""
    dest.mkdir()
    for name in SERVING_FILES + (ONNX_FILES if stale_reason(run) is None else ()):
        if (run.path / name).is_file():
            (dest / name).parent.mkdir(exist_ok=True)
            shutil.copy2(run.path / name, dest / name)
    if (run.path / ASSETS).is_dir():
        shutil.copytree(run.path / ASSETS, dest / ASSETS, ignore=shutil.ignore_patterns(".*"))
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


class _PlainDumper(yaml.SafeDumper):
    """safe_dump without anchors and aliases (&id001 / *id001) where one dict appears twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _replace(tmp: Path, out: Path) -> None:
    """Rename the finished context onto `out`; an existing `out` (empty, or overwrite) goes only after."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
