"""The generated hostile suite (issue 48): attack primitives (primitives.py) in seven categories, packed
by a seeded generator (generator.py) into job trees with gates, child jobs, an AI planner, best-of-N
with a judge, resolve merges, landings and restarts, run against a real server on a host repository
the run makes (runner.py), each attack's escape proved from outside the worker, and a table of what
was tried and what got out (table.py). ``python -m tests.hostile --attacks 1000 --seed 7`` runs it
outside CI; tests/test_hostile_generated.py is CI's slow tier."""
