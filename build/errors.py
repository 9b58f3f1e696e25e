"""The build stage's exception tree. Each message is one paragraph that names the file or field
involved; the CLI prints it as is and exits with code 1.

BuildError
  RecipeError       the recipe file is missing, not YAML, or a field is invalid
  DataError         a data file is missing, unreadable, empty, or its labels disagree with the recipe
  BaseModelError    the base model (path or hub id) cannot be loaded
  ExportError       ONNX export, fusion or conversion failed
  GateError         no variant passed the quality gate: nothing is published
  PublishError      the version could not be written to the store (e.g. a full disk)
"""

from __future__ import annotations


class BuildError(Exception):
    """A build failed; the message says why, and nothing was published."""


class RecipeError(BuildError):
    pass


class DataError(BuildError):
    pass


class BaseModelError(BuildError):
    pass


class ExportError(BuildError):
    pass


class GateError(BuildError):
    pass


class PublishError(BuildError):
    pass
