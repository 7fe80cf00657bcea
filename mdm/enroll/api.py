"""TRANSITIONAL (issue 10): the admin API handlers are ``mdm.enroll.handlers_api``; this keeps
``mdm/plugins.py``'s ``from mdm.enroll import api`` working until it imports that module."""

from mdm.enroll.handlers_api import router

__all__ = ["router"]
