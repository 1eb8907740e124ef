"""``python -m pair.demo``: the consortium demo (hub + three sites), or one node (``--single``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pair.demo import DEMO_PASSWORD, console, consortium, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the PAIR demo: a hub and three sites.")
    parser.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="hub; sites use the next ports")
    parser.add_argument("--dicom-port", type=int, default=11112)
    parser.add_argument("--single", action="store_true", help="one node with every site")
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args()
    if not args.single:
        if args.prepare_only:
            consortium.prepare(args.data_dir)
            return
        consortium.run(args.data_dir, host=args.host, port=args.port, dicom_port=args.dicom_port)
        return
    node = prepare(args.data_dir)
    node.close()
    console.print(
        f"\n[bold]PAIR demo[/bold]: http://{args.host}:{args.port}/  "
        f"login [bold]admin[/bold] / [bold]{DEMO_PASSWORD}[/bold] "
        f"(also radiologist, datamanager, evaluator, researcher)"
    )
    console.print(
        f"DICOM: AE title PAIR on {args.host}:{args.dicom_port}; "
        "allowed calling AE titles MODALITY01..03\n"
    )
    if args.prepare_only:
        return
    from pair.cli.serve import serve

    serve(
        args.data_dir, host=args.host, port=args.port, dicom_port=args.dicom_port, ae_title="PAIR"
    )


main()
