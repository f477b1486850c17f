"""Generate the gesture example's data, train it and save it: `python examples/gesture/train.py --out DIR`.

The code lives in harness/examples.py so that tests and `hil` can build it too.
"""

import sys

from harness.examples import main

if __name__ == "__main__":
    sys.exit(main(["gesture", *sys.argv[1:]]))
