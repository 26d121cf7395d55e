"""The schedules reconciler: the stack's schedule group made to match drsentry.yaml.

- rules.py: pure: the schedules the config asks for (one per target and job), the deployment
  they point at (group, functions, role), and the plan (create / update / delete / unchanged);
- job.py: the entry the CLI (`drsentry schedules sync`) and the schedules-sync function call.
"""
