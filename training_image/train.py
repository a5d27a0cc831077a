#!/usr/bin/env python
"""SageMaker training entrypoint: ``docker run <image> train``.

Thin wrapper: the logic (container contract, fine-tuning, export, evaluation) lives in
``ocrloop.model.train``. Root folder: ``$OCRLOOP_ML_ROOT`` or ``/opt/ml``.
"""

import sys

from ocrloop.model.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
