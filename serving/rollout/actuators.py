"""Traffic actuators: what moves the canary's share of the requests.

A :class:`TrafficActuator` sets the canary percent and returns what it observed (the evidence that the
split took effect): :class:`KServeActuator` patches the InferenceService's ``canaryTrafficPercent``
through the Kubernetes API and waits for the new generation's ``status.components.predictor.traffic``
(the cluster); :class:`RouterActuator` sets the local canary router's weights (the embedded engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import httpx

from skiff.errors import ConflictError, InputError, SourceError, UsageError

__all__ = ["TrafficActuator", "RouterActuator", "KServeActuator", "actuator_from_target"]


@runtime_checkable
class TrafficActuator(Protocol):
    """Moves traffic between the stable and the canary version."""

    def set_canary_percent(self, percent: int) -> dict[str, Any]:
        """Give the canary ``percent`` of the requests (0 = rollback, 100 = full promotion); returns what
        was observed (the evidence that the split took effect)."""

    def check_canary(self, stable_version: str, canary_version: str) -> None:
        """Raise unless the target serves these two versions as stable and canary."""

    def describe(self) -> dict[str, Any]:
        """Enough to rebuild the actuator later (stored in the rollout state)."""


class RouterActuator:
    """Sets the weights of the local canary router through its loopback admin endpoint."""

    def __init__(self, base_url: str, *, client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=10.0)

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            r = self.client.request(method, url, **kw)
        except httpx.HTTPError as e:
            raise SourceError(f"canary router unreachable at {url}: {e}") from e
        if r.status_code != 200:
            raise SourceError(f"canary router at {url} answered {r.status_code}: {r.text[:300]}")
        return r.json()

    def upstreams(self) -> dict[str, Any]:
        return self._call("GET", "/admin/upstreams")

    def set_canary_percent(self, percent: int) -> dict[str, Any]:
        out = self._call("PUT", "/admin/weights", json={"canary_percent": percent})
        if out.get("canary_percent") != percent:
            raise SourceError(f"canary router kept {out.get('canary_percent')}% instead of {percent}%")
        return out

    def check_canary(self, stable_version: str, canary_version: str) -> None:
        up = self.upstreams()
        seen = (str(up["stable"]["version"]), str(up["canary"]["version"]))
        if seen != (str(stable_version), str(canary_version)):
            raise ConflictError(f"the router at {self.base_url} serves stable {seen[0]} / canary {seen[1]}, "
                                f"not {stable_version} / {canary_version}")

    def describe(self) -> dict[str, Any]:
        return {"kind": "router", "url": self.base_url}


KSERVE_GROUP = "serving.kserve.io"
KSERVE_VERSION = "v1beta1"
KSERVE_PLURAL = "inferenceservices"
#: The field manager the controller patches as. Argo CD's ApplicationSet (infra/argocd) ignores the fields
#: this manager owns (``managedFieldsManagers``), so a sync does not reset a rollout in progress; when the
#: rollout ends at 100 % the field is removed and Git's value rules again.
ROLLOUT_FIELD_MANAGER = "skiff-rollout"


class KServeActuator:
    """Patches ``canaryTrafficPercent`` of an InferenceService's predictor and transformer (Knative mode).

    KServe splits each component's traffic by its own field, so the transformer moves with the predictor:
    otherwise the new transformer would take all the traffic while the new predictor takes the canary share.

    ``api`` is a ``kubernetes.client.CustomObjectsApi`` (or anything with its
    ``get_namespaced_custom_object`` / ``patch_namespaced_custom_object``). After each patch it waits until
    ``status.observedGeneration`` reaches the patched generation and the latest revision's share in
    ``status.components.predictor.traffic`` equals the requested percent. 100 % removes the field
    (KServe promotes the latest revision); 0 % sends everything back to the last rolled-out revision.
    """

    def __init__(self, api: Any, name: str, namespace: str, *, timeout: float = 300.0, poll: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api, self.name, self.namespace = api, name, namespace
        self.timeout, self.poll, self.clock, self.sleep = timeout, poll, clock, sleep

    def _get(self) -> dict[str, Any]:
        try:
            return self.api.get_namespaced_custom_object(KSERVE_GROUP, KSERVE_VERSION, self.namespace,
                                                         KSERVE_PLURAL, self.name)
        except Exception as e:  # kubernetes ApiException, urllib3 errors
            raise SourceError(f"cannot read InferenceService {self.namespace}/{self.name}: {e}") from e

    @staticmethod
    def patch_body(percent: int, *, with_transformer: bool = False) -> dict[str, Any]:
        """A merge patch: ``None`` removes the field (100 % = the latest revision takes everything)."""
        value = None if percent >= 100 else percent
        components = ("predictor", "transformer") if with_transformer else ("predictor",)
        return {"spec": {c: {"canaryTrafficPercent": value} for c in components}}

    def set_canary_percent(self, percent: int) -> dict[str, Any]:
        with_transformer = "transformer" in (self._get().get("spec") or {})
        body = self.patch_body(percent, with_transformer=with_transformer)
        try:
            patched = self.api.patch_namespaced_custom_object(KSERVE_GROUP, KSERVE_VERSION, self.namespace,
                                                              KSERVE_PLURAL, self.name, body,
                                                              field_manager=ROLLOUT_FIELD_MANAGER)
        except Exception as e:
            raise SourceError(f"cannot patch InferenceService {self.namespace}/{self.name}: {e}") from e
        generation = int((patched.get("metadata") or {}).get("generation") or 0)
        deadline = self.clock() + self.timeout
        while True:
            obj = self._get()
            status = obj.get("status") or {}
            traffic = ((status.get("components") or {}).get("predictor") or {}).get("traffic") or []
            latest = sum(int(t.get("percent") or 0) for t in traffic if t.get("latestRevision"))
            if int(status.get("observedGeneration") or 0) >= generation and traffic and latest == percent:
                return {"generation": generation, "traffic": traffic}
            if self.clock() >= deadline:
                raise SourceError(
                    f"InferenceService {self.namespace}/{self.name} did not reach {percent}% on its latest "
                    f"revision within {self.timeout:.0f}s (generation {generation}, observed "
                    f"{status.get('observedGeneration')}, traffic {traffic})"
                )
            self.sleep(self.poll)

    def release(self, stable_version: str) -> dict[str, Any]:
        """After a rollback: once the InferenceService serves ``stable_version`` again (Argo CD synced Git's
        stable spec), remove the canary percent this manager owns, so Git's value rules again.

        Left in place, the 0 % the rollback set would stay owned by this manager, which Argo CD ignores: the
        next promotion Git records would start a revision that never gets traffic.
        """
        deadline = self.clock() + self.timeout
        while True:
            served = ((self._get().get("metadata") or {}).get("labels") or {}).get("skiff.io/version")
            if served == str(stable_version):
                return self.set_canary_percent(100)
            if self.clock() >= deadline:
                raise SourceError(
                    f"InferenceService {self.namespace}/{self.name} still serves version {served}, not the stable "
                    f"{stable_version}, after {self.timeout:.0f}s: once Argo CD has synced the environment, remove "
                    f"the rollback's canaryTrafficPercent with `skiff rollout release`"
                )
            self.sleep(self.poll)

    def check_canary(self, stable_version: str, canary_version: str) -> None:
        obj = self._get()
        labels = (obj.get("metadata") or {}).get("labels") or {}
        served = labels.get("skiff.io/version")
        if served != str(canary_version):
            raise ConflictError(
                f"InferenceService {self.namespace}/{self.name} serves version {served} in its latest spec, "
                f"not the canary {canary_version}: record the canary with `skiff promote NAME --version "
                f"{canary_version} --env ENV --canary-percent 0` and let Argo CD sync it first"
            )

    def describe(self) -> dict[str, Any]:
        return {"kind": "kserve", "name": self.name, "namespace": self.namespace}


def actuator_from_target(target: Mapping[str, Any], *, kube_api: Any = None) -> TrafficActuator:
    """Rebuild the actuator a rollout state names (for manual decisions)."""
    kind = target.get("kind")
    if kind == "router":
        return RouterActuator(target["url"])
    if kind == "kserve":
        if kube_api is None:
            raise UsageError("a Kubernetes API client is needed to change an InferenceService")
        return KServeActuator(kube_api, target["name"], target["namespace"])
    raise InputError(f"unknown rollout target {dict(target)!r}")
