"""`tinysplat-compare`'s pieces: what the user gives it, checked before anything slow loads
(`inputs.py`); loading a side (`runs.py`: a trained run of any Nerfstudio method; `splats.py`: a
splat file of any trainer; `datasets.py`: the `--data` dataset they are scored on), placing them in
one frame (`frames.py`), scoring them as `ns-eval` does (`scoring.py`), putting them together
(`sides.py`), and the viser page (`page.py`, its split picture in `picture.py`)."""
