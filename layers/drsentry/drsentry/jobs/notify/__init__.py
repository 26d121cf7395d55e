"""Notifications: how a run's outcome, and every CloudWatch alarm, reaches people.

Where things are: ``rules.py`` the alert state and the decision what Slack hears (pure);
``notifier.py`` the ``Notifier`` every run calls (SNS, Slack, alert state); ``topic.py``
``handle_topic_message``, the notify function's job on the alerts topic.

The route
---------
1. Every run (backup, verify, archive, replication-check) writes its record first, then
   calls ``Notifier.send(notice)`` once. ``send`` never raises: the record is already
   written, and a notification problem must not turn a good backup into a failed run.
2. SNS first: one message on ``notifications.sns_topic_arn`` per run, the notice as JSON
   (CONTRACT.md "Notifications"), with message attributes ``severity``, ``source`` and
   ``target`` for subscription filter policies. botocore's standard retries (AwsClients)
   cover throttling and blips; a publish that still fails is logged, counted in the
   ``NotificationFailed`` metric and returned in the ``Delivery``.
3. Slack second, from the run itself, with slack_sdk's webhook client: a Block Kit
   message for failures and warnings, and a "recovered" message for the first success
   after them (per source and target). The webhook URL comes from ``slack_webhook_url``
   or the Secrets Manager secret ``slack_webhook_secret``. A Slack outage (refused,
   non-200, timeout) or an unreadable secret is logged and counted, never raised.
4. No spam: the catalog table holds one alert state per source and target
   (``Catalog.alert_states``) recording what Slack was last told.
   The same failure (same severity, status and set of failing checks) is repeated at most
   every ``notifications.repeat_after``; a different failure is posted at once. The state
   is written only after Slack took the message, so a Slack outage never suppresses the
   next run's alert or loses a recovery message. A DynamoDB error is logged and counted
   and Slack is still tried (a duplicate post beats a lost one).
5. CloudWatch alarms publish to the same topic. The ``notify`` function is subscribed to
   it and calls ``handle_topic_message`` for each message: alarm state changes (ALARM,
   OK, INSUFFICIENT_DATA) are formatted for Slack and posted; drsentry's own run notices
   (JSON with ``source`` and ``run_id``) are skipped because the run already posted them,
   so nothing reaches Slack twice.
"""
