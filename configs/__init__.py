"""The config files (``python launch/main.py --config=configs/NAME.py``), installed as ``jst.configs``.

A wheel or ``pip install`` carries them, so a notebook or another project runs the same experiments:
``from jst.configs import mnist; config = mnist.get_config()``.
"""
