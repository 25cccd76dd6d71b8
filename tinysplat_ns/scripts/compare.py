"""`tinysplat-compare`: two trained runs (any Nerfstudio methods) or splat files (any trainer's, in a
format TinySplat reads), or one splat file alone, in one viser page, seen from one camera: A left of
a divider, B right of it, each labelled and scored on the test photos as `ns-eval` scores a run; a
held-out test view (and its photo) one click away. The pieces are in `tinysplat_ns/compare/`."""

import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional

import tyro
from typing_extensions import Annotated

from tinysplat_ns.child_processes import stop_children, stop_children_at_exit
from tinysplat_ns.compare.inputs import check_arguments, checked_inputs


@dataclass
class Compare:
    """Show two trained runs or splat files side by side in one viser page, or one splat file."""

    load_config: Annotated[List[Path], tyro.conf.UseAppendAction] = field(default_factory=list)
    """A run's config.yml (a side); give two, or one with a --load-splat."""
    load_splat: Annotated[List[Path], tyro.conf.UseAppendAction] = field(default_factory=list)
    """A splat file (a side): .ply (Inria's, gsplat's, Brush's, OpenSplat's), compressed .ply, .spz, SOG."""
    data: Optional[Path] = None
    """The dataset the splat files were trained on: its cameras and test photos (without a run, needed
    for scores and test views)."""
    splat_frame: Literal["data", "run"] = "data"
    """The splat files' coordinates: the dataset's own (COLMAP's: Inria's, gsplat's and OpenSplat's
    trainers, `tinysplat-export --frame data`), or a run's (`ns-export gaussian-splat`, `tinysplat-export`)."""
    port: int = 7007
    """The viewer's port (open http://localhost:PORT)."""
    host: str = "0.0.0.0"
    """The address to listen on (127.0.0.1: this machine only)."""
    max_resolution: int = 640
    """Long side of the rendered picture when the camera rests (it can be changed in the page)."""

    def main(self) -> None:
        check_arguments(self.load_config, self.load_splat, self.max_resolution)
        stop = threading.Event()
        # a Ctrl-C while the files are read or Nerfstudio loads the runs stops in one line, not a traceback
        signal.signal(signal.SIGINT, _stop_now)
        signal.signal(signal.SIGTERM, _stop_now)
        splat_files = checked_inputs(self.load_config, self.load_splat, self.data)

        from tinysplat_ns.compare.page import ComparePage
        from tinysplat_ns.compare.sides import load_sides

        sides, views, warnings = load_sides(self.load_config, splat_files, self.data, self.splat_frame)
        for warning in warnings:
            print(f"warning: {warning}", flush=True)

        page = ComparePage(sides, views, warnings, self.port, self.host, self.max_resolution)
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        # (viser takes the next free port when this one is in use)
        print(f"tinysplat-compare: open http://localhost:{page.server.get_port()} (Ctrl-C stops)", flush=True)

        scoring = threading.Thread(target=page.score_test_views, args=(stop,), daemon=True)
        scoring.start()
        while not stop.wait(0.5):
            pass
        stop_children()
        page.close()
        print("tinysplat-compare: stopped", flush=True)
        # Out at once, skipping the exit handlers: nothing is left to save, the scoring thread may be
        # mid-render (a NeRF on a CPU takes minutes per photo), and viser's stopped server prints
        # stray asyncio task errors if the interpreter lingers (seen while the workers were stopped).
        os._exit(0)


def _stop_now(signum, frame) -> None:
    print("tinysplat-compare: stopped while loading", file=sys.stderr, flush=True)
    raise SystemExit(130 if signum == signal.SIGINT else 143)


def entrypoint() -> None:
    stop_children_at_exit()  # a loaded run's datamanager may start worker processes (nerfacto's does)
    tyro.extras.set_accent_color("bright_yellow")
    tyro.cli(Compare).main()


if __name__ == "__main__":
    entrypoint()
