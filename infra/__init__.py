"""The ocrloop CDK app's constructs (one per concern; see ``infra/stack.py``) and deployment notes
(``infra/DEPLOY.md``)."""
