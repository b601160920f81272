"""The AWS half of ``skiff cloud``: the cluster's credentials, the images' registry, the bucket's safety.

Everything here runs on boto3 (the ``skiff[aws]`` extra), imported only when a command runs, with the
identity boto3's own chain finds — environment variables, a profile (``--profile`` / ``AWS_PROFILE``), the
IRSA web identity of a pod (``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``) — optionally assuming a
role on top (``--role-arn``). ``AWS_ENDPOINT_URL`` (boto3's standard variable) points every client at
another endpoint, an emulator in the tests.

- :mod:`skiff.cloud.aws.session`: the boto3 session from that chain.
- :mod:`skiff.cloud.aws.eks`: the EKS bearer token (what ``aws eks get-token`` makes) and kubeconfig entries.
- :mod:`skiff.cloud.aws.ecr`: repositories, the registry login, pushing skiff's images, the scan gate.
- :mod:`skiff.cloud.aws.doctor`: the checks ``skiff doctor --cloud aws`` runs.
"""

from __future__ import annotations
