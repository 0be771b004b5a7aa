"""The CI build matrix: which spec builds on which runner. The CI system fans the jobs out;
trtforge only plans them (it has no scheduler of its own).

TensorRT-RTX builds run on any CPU runner; an enterprise TensorRT engine must be built on the
GPU it targets, so such a spec gives one job per target GPU class. For a Triton release
(``matrix --triton 24.08``, or ``triton:`` in trtforge.yaml) the enterprise jobs run in that
release's container (``nvcr.io/nvidia/tritonserver:24.08-py3``) with the TensorRT wheel of the
release's version pinned, so the engine is built by the TensorRT that will load it.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from trtforge import __version__
from trtforge.errors import InvalidInputError
from trtforge.project import CPU_RUNNER, Project
from trtforge.spec import Spec
from trtforge.tags import AMPERE, FLAVOR_RTX, FLAVOR_TENSORRT, ComputeCapability

if TYPE_CHECKING:
    from trtforge.triton_releases import TritonRelease


@dataclass(frozen=True)
class MatrixEntry:
    id: str
    spec: str
    name: str
    precision: str
    backend: str
    gpu: str
    runner: list[str]
    install: str
    ci: str  # the job's build command, shell-quoted, to which it adds its --out and --junit
    container: str | None = None  # the image the job runs in (a Triton release's), None: the runner's own
    triton: str | None = None  # the Triton release the job builds for (its ``ci --triton``)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _gpu_jobs(spec: Spec, runners: dict[str, list[str]], where: str) -> list[tuple[str, list[str], bool]]:
    """(compute capability, runner labels, whether the job builds for that GPU alone: ``ci --cc``)
    for each GPU job of an enterprise TensorRT spec, which builds on the GPU it runs on."""
    gpu_runners = {ComputeCapability.parse(key): labels for key, labels in runners.items() if key != CPU_RUNNER}
    if spec.build.hardware_compatibility == "ampere_plus":
        fitting = sorted(cc for cc in gpu_runners if cc >= AMPERE)
        if not fitting:
            raise InvalidInputError(f"{where}: ampere_plus needs a runner with a GPU >= 8.0 in trtforge.yaml runners")
        return [(str(fitting[0]), gpu_runners[fitting[0]], False)]
    wanted = [ComputeCapability.parse(cc) for cc in spec.targets] or sorted(gpu_runners)
    if not wanted:
        raise InvalidInputError(
            f"{where}: enterprise TensorRT builds on the target GPU; add GPU runners to trtforge.yaml, "
            "e.g. runners: {'8.6': [self-hosted, rtx3090]}"
        )
    jobs = []
    for cc in wanted:
        if cc not in gpu_runners:
            known = ", ".join(str(key) for key in sorted(gpu_runners)) or "none"
            raise InvalidInputError(
                f"{where}: target {cc} has no runner in trtforge.yaml (runners for: {known}); "
                f"add runners: {{'{cc}': [labels]}}"
            )
        jobs.append((str(cc), gpu_runners[cc], True))
    return jobs


#: The CPU runner of a project without ``runners:``, per output format: GitHub's hosted Linux
#: runner; on GitLab no tags (any runner of the project takes the job).
DEFAULT_CPU_RUNNER: dict[str, list[str]] = {"github": ["ubuntu-latest"], "gitlab": [], "json": ["ubuntu-latest"]}


def plan_matrix(
    project: Project, specs: list[Spec], default_cpu_runner: list[str], triton: TritonRelease | None = None
) -> list[MatrixEntry]:
    """One entry per (spec, GPU class); pure over the project settings and the specs. A project
    without ``runners:`` builds on one CPU runner labelled ``default_cpu_runner``. With ``triton``
    every job builds enterprise TensorRT in that release's container (Triton loads no TensorRT-RTX plan)."""
    runners = project.settings.runners or {CPU_RUNNER: default_cpu_runner}
    entries: list[MatrixEntry] = []
    for spec in specs:
        where = str(spec.origin.path)
        backend: str = spec.backend
        if backend == "auto":
            backend = FLAVOR_RTX if CPU_RUNNER in runners and triton is None else FLAVOR_TENSORRT
        if backend == FLAVOR_RTX and triton is not None:
            raise InvalidInputError(
                f"{where}: backend: tensorrt-rtx, but Triton {triton.name} runs enterprise TensorRT plans only; "
                "use backend: tensorrt (or auto) in this spec, or drop the release (--triton, trtforge.yaml triton:)"
            )
        if backend == FLAVOR_RTX:
            if CPU_RUNNER not in runners:
                raise InvalidInputError(
                    f"{where}: TensorRT-RTX builds need a CPU runner; add runners: {{cpu: [labels]}} to trtforge.yaml"
                )
            jobs = [(CPU_RUNNER, runners[CPU_RUNNER], False)]
        else:
            jobs = _gpu_jobs(spec, runners, where)
        for gpu, labels, one_gpu in jobs:
            suffix = CPU_RUNNER if gpu == CPU_RUNNER else ComputeCapability.parse(gpu).sm
            spec_file = _relative(spec.origin.path, Path.cwd())
            if spec_file.startswith("-"):  # quoting keeps it one word, but ci would read it as an option
                spec_file = f"./{spec_file}"
            command = ["trtforge", "ci", spec_file, "--backend", backend, *(["--cc", gpu] if one_gpu else [])]
            command += ["--triton", triton.name] if triton is not None else []
            entries.append(
                MatrixEntry(
                    id=f"{spec.name}-{spec.precision}-{suffix}",
                    spec=spec_file,
                    name=spec.name,
                    precision=spec.precision,
                    backend=backend,
                    gpu=gpu,
                    runner=labels,
                    install=project.settings.install or install_command(backend, triton),
                    ci=shlex.join(command),
                    container=triton.image if triton is not None else None,
                    triton=triton.name if triton is not None else None,
                )
            )
    _refuse_shared_jobs(entries)
    return entries


def _refuse_shared_jobs(entries: list[MatrixEntry]) -> None:
    """Exit 2, naming the specs, where two give one job id: a CI system keys its jobs by it (GitLab's
    job name, the JUnit file's), so one job would replace the other. Ids come from name, precision
    and GPU alone, so specs that ``ci`` tells apart (other targets, version_compatible) may share one."""
    specs_of: dict[str, list[str]] = {}
    for entry in entries:
        specs_of.setdefault(entry.id, []).append(entry.spec)
    for job, specs in specs_of.items():
        if len(specs) > 1:
            raise InvalidInputError(
                f"{' and '.join(specs)} {'both' if len(specs) == 2 else 'all'} give the CI job '{job}' "
                "(a job is named name-precision-GPU): give each spec its own 'name:'"
            )


#: The pip extra a job's backend needs, and the index it comes from (enterprise TensorRT: NVIDIA's).
EXTRAS = {FLAVOR_RTX: ("rtx", ""), FLAVOR_TENSORRT: ("tensorrt", " --extra-index-url https://pypi.nvidia.com")}


def install_command(backend: str, triton: TritonRelease | None = None) -> str:
    """How the job installs trtforge: this very version (the one that planned the matrix, so a
    release that changes the CLI or the artifacts never enters a pipeline unasked); in a Triton
    container, with the release's TensorRT pinned too, as ``major.minor.patch.*``: wheels before
    10.8 lack the build number the release notes give, and wheels from 10.8 on carry one of their
    own (10.8.0.43), which ``==10.8.0`` does not match. trtforge.yaml's ``install:`` replaces it."""
    extra, index = EXTRAS[FLAVOR_TENSORRT if triton is not None else backend]
    pins = [f"'trtforge[{extra}]=={__version__}'"]
    if triton is not None:
        pins.append(f"'tensorrt=={'.'.join(triton.tensorrt.split('.')[:3])}.*'")
    return f"pip install {' '.join(pins)}{index}"


def publish_install_command() -> str:
    """How the publish job installs trtforge: this version, no TensorRT (it only copies files)."""
    return f"pip install 'trtforge=={__version__}'"


#: the most jobs GitHub Actions makes of one matrix; beyond, it fails the workflow run
GITHUB_MATRIX_LIMIT = 256


def render_github(entries: list[MatrixEntry]) -> str:
    """One line for ``$GITHUB_OUTPUT``: ``strategy.matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}``.
    Refused (exit 2) over GitHub's limit: the run would fail only once the build job expands it."""
    import json

    if len(entries) > GITHUB_MATRIX_LIMIT:
        raise InvalidInputError(
            f"the matrix has {len(entries)} jobs, and GitHub Actions runs at most {GITHUB_MATRIX_LIMIT} from one "
            "matrix: split the specs over several spec folders (each with its trtforge.yaml) and plan each in its own "
            "workflow job, or use --format json and split the entries yourself"
        )
    return json.dumps({"include": [asdict(entry) for entry in entries]}, separators=(",", ":"))


#: the image of a GitLab job that runs in no Triton container: pip and a Python trtforge supports
GITLAB_PYTHON_IMAGE = "python:3.11"


def render_gitlab(entries: list[MatrixEntry], publish_to: str | None, install: str | None = None) -> str:
    """A child-pipeline YAML (GitLab's dynamic child pipelines): one job per entry, then publish;
    ``install``: trtforge.yaml's command for every job, the publish job's too."""
    jobs: dict[str, Any] = {"stages": ["build", "publish"]}
    for entry in entries:
        jobs[f"build:{entry.id}"] = {
            "stage": "build",
            **({"tags": entry.runner} if entry.runner else {}),
            # a Triton release's container, else an image with pip (a docker runner's default may lack it;
            # a shell runner, as GPU machines often are, ignores it)
            "image": entry.container or GITLAB_PYTHON_IMAGE,
            "before_script": [entry.install],
            "script": [f"{entry.ci} --out out --junit {shlex.quote(f'out/junit-{entry.id}.xml')}"],
            "cache": {"key": f"trtforge-{entry.id}", "paths": [".trtforge-cache/"]},
            "variables": {"TRTFORGE_CACHE_DIR": "$CI_PROJECT_DIR/.trtforge-cache"},
            "artifacts": {
                "when": "always",
                "paths": ["out/"],
                "reports": {"junit": f"out/junit-{entry.id}.xml"},
            },
        }
    if publish_to:
        jobs["publish"] = {  # after every build job by its stage (``needs:`` would stop at 50 jobs)
            "stage": "publish",
            "image": GITLAB_PYTHON_IMAGE,
            "before_script": [install or publish_install_command()],
            "script": [
                f'for engine in out/*.engine; do trtforge publish "$engine" --to {shlex.quote(publish_to)}; done'
            ],
        }
    return yaml.dump(jobs, Dumper=_NoAliases, sort_keys=False, width=200)


class _NoAliases(yaml.SafeDumper):
    """CI YAML is read by people: repeat shared lists instead of writing &id001 anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_json(entries: list[MatrixEntry]) -> dict[str, Any]:
    return {"entries": [asdict(entry) for entry in entries]}
