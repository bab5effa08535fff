"""Push rules and notification counts (C-S API "Push Notifications"): the server-default
rules, a user's own rules, the evaluator that applies them to an event, and the per-user
notification rows /sync counts and /notifications lists."""
