"""Pure domain code: unit files, requirements, job states, the scheduler and the planners.

Standard library only; nothing here performs I/O or reads the clock.
"""
