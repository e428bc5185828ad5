"""Serving a list of namespaces (issue 9 item 7): the configuration the namespaced install runs with."""

from __future__ import annotations

import kopf

from hybridrec_operator.controller.app import configure_kopf
from hybridrec_operator.controller.config import OperatorConfig


def test_exact_namespaces_turn_kopf_namespace_scanning_off() -> None:
    config = OperatorConfig.from_env({"HYBRIDREC_NAMESPACES": "team-a, team-b"})
    assert config.served_namespaces() == ["team-a", "team-b"] and config.exact_namespaces()
    settings = kopf.OperatorSettings()
    configure_kopf(settings, config)
    # The namespaced RBAC grants no right to list Namespaces: kopf must not need it.
    assert settings.scanning.disabled is True


def test_globs_and_cluster_wide_keep_scanning() -> None:
    for env in ({"HYBRIDREC_NAMESPACES": "team-*"}, {"HYBRIDREC_NAMESPACES": "!kube-system"}, {}):
        config = OperatorConfig.from_env(env)
        assert not config.exact_namespaces()
        settings = kopf.OperatorSettings()
        configure_kopf(settings, config)
        assert settings.scanning.disabled is False
