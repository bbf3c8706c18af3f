"""Use cases shared by the API and the worker: images, comparisons, batches, keys, the job queue.

Services take a SQLAlchemy session (or session factory), an ObjectStore and a JobQueue as
arguments; they raise ``ServiceError`` subclasses with stable codes, never HTTP errors.
"""
