"""Dependency audit for CI: `pip check` plus `pip-audit` over the installed environment.

Fails on broken requirements and on any known vulnerability pip-audit reports. pip-audit
needs an advisory service (PyPI's JSON API or OSV); where the machine cannot reach one it
skips every package and still says "No known vulnerabilities found", so this script counts
what was really audited and says plainly when the answer is "not audited" rather than "clean".
"""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> int:
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    print("pip check:", check.stdout.strip() or check.stderr.strip())
    if check.returncode != 0:
        return 1
    run = subprocess.run([sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off",
                          "-f", "json"], capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit gave no report (exit {run.returncode}): {run.stderr.strip()[-500:]}")
        return 1
    deps = report["dependencies"]
    audited = [d for d in deps if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    for d in vulnerable:
        ids = ", ".join(v["id"] for v in d["vulns"])
        print(f"VULNERABLE {d['name']} {d['version']}: {ids}")
    print(f"pip-audit: {len(audited)} of {len(deps)} packages audited, {len(vulnerable)} vulnerable")
    if not audited:
        print("pip-audit: the advisory service was unreachable from this machine; nothing was audited")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
