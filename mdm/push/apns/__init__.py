"""The APNs HTTP/2 client for MDM wake-ups (DESIGN §6): ``ApnsClient`` implements
``mdm.push.types.PushTransport`` over a few long-lived HTTP/2 connections with mutual TLS."""

from mdm.push.apns.client import ApnsClient, ApnsStats

__all__ = ["ApnsClient", "ApnsStats"]
