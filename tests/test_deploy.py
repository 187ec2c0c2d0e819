"""The container image definition and the Kubernetes manifests in deploy/, checked offline:
no cluster and no image build here (deploy/README.md says what was not tried)."""

import copy
import re
from pathlib import Path

import pytest

from .conftest import REPO, run_cli

DEPLOY = REPO / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.30.0"  # a version clusters run in 2026; its schemas ship with kubernetes-validate


def _documents() -> list[tuple[Path, dict]]:
    import yaml

    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())
            if doc]


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", [])


def test_every_manifest_is_valid_against_the_kubernetes_schemas_strictly():
    import kubernetes_validate

    documents = _documents()
    assert {doc["kind"] for _path, doc in documents} == {"Secret", "Job"}
    for _path, doc in documents:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    # and the check can fail: a misspelt field is refused
    job = copy.deepcopy(next(doc for _p, doc in documents if doc["kind"] == "Job"))
    job["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)


def test_the_pods_run_as_a_user_with_limits_and_the_broker_url_from_a_secret():
    jobs = [doc for _path, doc in _documents() if doc["kind"] == "Job"]
    assert len(jobs) == 2
    for job in jobs:
        assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        for container in _containers(job):
            assert set(container["resources"]["limits"]) >= {"cpu", "memory"}
            url = next(e for e in container["env"] if e["name"] == "MQPROBE_AMQP_URL")
            assert url["valueFrom"]["secretKeyRef"]["name"] == "mqprobe-broker"
    agents = next(j for j in jobs if j["metadata"]["name"] == "mqprobe-agents")
    assert agents["spec"]["completionMode"] == "Indexed"


def _local(args: list[str], tmp_path: Path) -> list[str]:
    """A container's args as this host runs them: the env it gets from Kubernetes filled
    in, its result directory a temporary one."""
    values = {"JOB_COMPLETION_INDEX": "0", "POD_IP": "127.0.0.1"}
    out = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg) for arg in args]
    return [arg.replace("/results", str(tmp_path)) for arg in out]


def test_the_images_command_lines_are_accepted_by_this_version(tmp_path):
    """Each container's exact args, run here against a broker that is not there: every
    flag is understood (no usage error, exit 2), and they fail on the broker alone."""
    from mqprobe.broker import free_port

    ran = 0
    for _path, doc in _documents():
        for container in _containers(doc):
            result = run_cli(*_local(container["args"], tmp_path),
                             amqp_url=f"amqp://u:p@127.0.0.1:{free_port()}/")
            assert result.returncode == 1, (container["args"], result.stderr)
            assert "cannot reach the broker" in result.stderr, result.stderr
            ran += 1
    assert ran == 2


def test_the_containerfile_runs_mqprobe_as_a_user_from_what_the_repo_has():
    text = (DEPLOY / "Containerfile").read_text()
    assert 'ENTRYPOINT ["mqprobe"]' in text and "\nUSER 10001\n" in text
    for source in re.findall(r"^COPY (\S+)", text, flags=re.MULTILINE):
        assert (REPO / source).exists(), source
    default = re.search(r'^CMD \["(.*)"\]', text, flags=re.MULTILINE).group(1)
    assert run_cli(default).returncode == 0  # the image's default command: mqprobe --help
