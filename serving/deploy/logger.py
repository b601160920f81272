"""KServe's inference logger for an environment: ``spec.predictor.logger`` sending CloudEvents to skiff's sink.

An environment file turns it on with an ``inference_log`` block (:class:`InferenceLoggerConfig`)::

    inference_log:
      mode: all                 # all | request | response (KServe's LoggerType)
      url: http://skiff-log-sink.skiff.svc.cluster.local   # default: the platform chart's sink Service

KServe's agent then sends every request and every answered (200) response of the predictor to the sink
(:mod:`serving.runtime.log_sink`), which samples (the sink's ``SKIFF_INFERENCE_LOG_SAMPLE_RATE(S)``),
pairs and writes them to ``<root>/inference/``. The logger is set on the predictor, whose requests are
the model's feature rows (with a Feast transformer in front, the transformer's entity keys are not what
the monitor compares). The client's ``X-Request-Id`` header travels as logger metadata (the V2 body's
``id`` wins), and the served version as the ``skiff.io/served-version`` annotation for requests that get
no answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from skiff.cluster import NAMESPACE

__all__ = ["InferenceLoggerConfig", "SINK_SERVICE", "DEFAULT_SINK_URL", "VERSION_ANNOTATION", "logger_spec"]

#: the sink's Service in the platform chart (helm/skiff templates/log-sink.yaml)
SINK_SERVICE = "skiff-log-sink"
DEFAULT_SINK_URL = f"http://{SINK_SERVICE}.{NAMESPACE}.svc.cluster.local"
#: the annotation naming the served version (the sink reads it for requests without an answer)
VERSION_ANNOTATION = "skiff.io/served-version"
#: headers KServe's agent forwards in the events' ``metadata`` extension
METADATA_HEADERS = ["X-Request-Id"]


class InferenceLoggerConfig(BaseModel):
    """``inference_log`` in an environment file: KServe's logger on every predictor of the environment."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["all", "request", "response"] = Field(
        default="all", description="What KServe's logger sends: requests and responses (all: the sink pairs "
        "them into rows with inputs and answers), requests only, or responses only.")
    url: str = Field(default=DEFAULT_SINK_URL, pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(/[!-~]*)?$",
                     description="Where the CloudEvents go: skiff's log sink Service.")


def logger_spec(cfg: InferenceLoggerConfig) -> Any:
    """The predictor's ``V1beta1LoggerSpec``."""
    from kserve import V1beta1LoggerSpec

    return V1beta1LoggerSpec(mode=cfg.mode, url=cfg.url, metadata_headers=list(METADATA_HEADERS),
                             metadata_annotations=[VERSION_ANNOTATION])
