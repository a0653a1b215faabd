"""What a model URI names. Resolving an alias to its version is MLflow's (mlcore/tracking/scoring.py does it);
parsing the URI is not, so it lives here and is tested without a registry."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

_REGISTERED = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))?/?")


@dataclass(frozen=True)
class ModelRef:
    uri: str  # as the user gave it
    name: str | None = None  # the registered model's name, for models:/ URIs
    alias: str | None = None  # models:/name@alias
    version: str | None = None  # the concrete version: given (models:/name/3) or the alias's, once resolved

    @property
    def load_uri(self) -> str:
        """The URI that loads exactly `version`: an alias moved while the job runs does not change the model."""
        return f"models:/{self.name}/{self.version}" if self.name and self.version else self.uri

    @property
    def identity(self) -> str:
        """What a resumed run must find unchanged: the concrete version, else the URI as given
        (runs:/ and paths name one model already; models:/name/latest is taken at its word)."""
        return self.load_uri

    def resolved(self, version: str) -> ModelRef:
        return dataclasses.replace(self, version=str(version))


def parse(uri: str) -> ModelRef:
    """models:/name@alias, models:/name/3 -> name, alias, version; any other URI is kept as it is."""
    match = _REGISTERED.fullmatch(uri.strip())
    if match is None:
        return ModelRef(uri)
    return ModelRef(uri, match["name"], match["alias"], match["version"])
