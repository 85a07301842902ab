"""The shipped configs: `synthetic.py` (the embedded dataset, the demo and the paper-size
DiT) and one file per real dataset. On the command line they are `configs/<name>.py`:
that path is read from the working directory when it exists there (the repository
root links `configs/` here), else from this package, so an installed package finds them
from anywhere."""
