"""make demo, make demo-mail, make demo-down.

python -m tests.harness.demo up [--mode parallel|serial] [--svg docs/demo.svg]
python -m tests.harness.demo mail          # the latest messages at the relay, and the newest in full
python -m tests.harness.demo down          # Mailpit, Prometheus, then the cluster: nothing is left
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.harness import cluster


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="action", required=True)
    up = commands.add_parser("up", help="set up and run the seed's scenario under a live view")
    up.add_argument("--mode", choices=("parallel", "serial"), default="parallel")
    up.add_argument("--svg", type=Path, help="save the final screen as an SVG")
    mail = commands.add_parser("mail", help="the latest messages at the relay")
    mail.add_argument("--limit", type=int, default=10)
    commands.add_parser("down", help="stop what make demo started, and the cluster")
    args = parser.parse_args()
    # Imported here: `down` must work even if a dependency of the live view is broken.
    from tests.harness.demo.state import DemoState

    if args.action == "up":
        from tests.harness.demo.run import demo

        sys.exit(demo(args.mode, args.svg))
    if args.action == "mail":
        from tests.harness.demo import mailpit

        url = DemoState.load().urls.get("mailpit")
        if url is None:
            sys.exit("no demo is running: make demo")
        print(mailpit.show(url, args.limit))
        sys.exit(0)
    stopped = DemoState.load().stop_all()
    if stopped:
        print(f"stopped {', '.join(stopped)}")
    sys.exit(cluster.down())


if __name__ == "__main__":
    main()
