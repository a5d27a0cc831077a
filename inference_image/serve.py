#!/usr/bin/env python
"""SageMaker inference container entrypoint: ``serve.py serve``.

SageMaker runs the image as ``docker run <image> serve``; with ``ENTRYPOINT ["python",
"/opt/program/serve.py"]`` that arrives here as ``argv[1] == "serve"``. The server itself
(``/ping``, ``/invocations``, model loading, limits) is ``ocrloop.ocr.service``; see its docstring
for the environment variables. The local hosting adapter runs this same file as a process.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if argv[:1] != ["serve"]:
        print("usage: serve.py serve   (SageMaker hosting contract; model in SM_MODEL_DIR or /opt/ml/model)",
              file=sys.stderr)
        return 2
    from ocrloop.ocr.service import run_server

    run_server()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
