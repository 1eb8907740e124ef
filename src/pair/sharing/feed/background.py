"""What ``pair serve`` runs for the feed: at a hub, the default quota and the webhook worker;
at a site with PAIR_FEED_FOLLOW=1, the follower. State is in the database, so several server
processes may run these side by side."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pair.core.node import Node
from pair.sharing.feed.follower import run_follower
from pair.sharing.feed.studies import set_default_quota
from pair.sharing.feed.webhooks import run_worker


class FeedBackground:
    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, name: str, target: Callable[[Node, threading.Event], None], node: Node) -> None:
        thread = threading.Thread(
            target=target, args=(node, self.stop_event), name=name, daemon=True
        )
        thread.start()
        self.threads.append(thread)

    def close(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)


def start_feed(node: Node) -> FeedBackground:
    settings = node.settings
    background = FeedBackground()
    if settings.role == "hub":
        with node.db.session() as session:
            set_default_quota(
                session, settings.hub_quota_max_instances, settings.hub_quota_max_bytes
            )
        background.start("feed-webhooks", run_worker, node)
    elif settings.feed_follow:
        background.start("feed-follower", run_follower, node)
    return background
