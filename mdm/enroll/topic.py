"""TRANSITIONAL (issue 10): the push topic moved to ``mdm.push.topic``; this re-export keeps the
imports of ``mdm/cli/init_cmd.py``, ``mdm/bench/ios.py`` and ``tests/test_reload.py`` working
until they import ``mdm.push.topic``. Delete it then."""

from mdm.push.topic import (
    DEVELOPMENT_CERT,
    DEVELOPMENT_CN,
    DEVELOPMENT_HOWTO,
    DEVELOPMENT_KEY,
    DEVELOPMENT_WARNING,
    TOPIC_PREFIX,
    PushTopic,
    TopicError,
    create_development_identity,
    describe,
    is_development,
    log_push_identity,
    read_topic,
    topic_of,
)

__all__ = [
    "DEVELOPMENT_CERT", "DEVELOPMENT_CN", "DEVELOPMENT_HOWTO", "DEVELOPMENT_KEY", "DEVELOPMENT_WARNING",
    "TOPIC_PREFIX", "PushTopic", "TopicError", "create_development_identity", "describe", "is_development",
    "log_push_identity", "read_topic", "topic_of",
]
