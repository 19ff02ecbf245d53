"""Drives one Helm release of charts/privacy-operator through the real Helm v4 Go SDK.

Usage: release.py KUBECONFIG NAMESPACE RELEASE install|upgrade|uninstall [VALUES_JSON]

Prints the action's result as one JSON line; exits non-zero with the Helm error otherwise.
"""

import json
import os
import sys

import helm_python

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "charts", "privacy-operator")


def main() -> int:
    kubeconfig, namespace, release, action = sys.argv[1:5]
    values = json.loads(sys.argv[5]) if len(sys.argv) > 5 else None
    cfg = helm_python.Config(kubeconfig_path=kubeconfig, namespace=namespace)
    try:
        if action == "install":
            out = cfg.install(CHART, release, values, namespace=namespace, timeout=60)
        elif action == "upgrade":
            out = cfg.upgrade(CHART, release, values, namespace=namespace, timeout=60)
        elif action == "uninstall":
            out = cfg.uninstall(release, timeout=60)
        else:
            print(f"unknown action {action!r}", file=sys.stderr)
            return 2
    except helm_python.HelmError as e:
        print(f"helm {action} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
