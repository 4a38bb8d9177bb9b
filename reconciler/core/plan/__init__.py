"""Planning, one job per module; ``reconciler.core`` hands on what other packages use.

model    the plan and its typed steps
planner  build_plan: desired waves + observed factory -> a plan
checks   the plan-time checks (expiry, tags, UUIDs, groups)
keys     the plan as a run without the offline key, or with one that signed already, sees it
reads    which reads a plan needs (pure; ``reconciler.factory.observe`` asks them)
"""
