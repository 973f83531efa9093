"""Hello world, durable: a pipeline of greetings and a two-step workflow minion run by Gru.

Written the way programs for the original ``minions`` project are written (``Gru.create``,
``start_orchestration(Pipeline, Minion)``, ``@minion_step``); ``python -m examples.hello_world``.
"""
