import sys

from torch_model.cli import main

sys.exit(main())
