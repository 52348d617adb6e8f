"""The composition root: the one package that knows every part and wires them together.

`stack` starts the platform (Redis, SMSC simulator, gateway, self-care API) in one process, `cli`
is the `ussdgw` command, `seed` loads subscribers. Nothing below this package imports it.
"""
