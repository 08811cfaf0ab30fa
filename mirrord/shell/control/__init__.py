"""The admin control socket: protocol, server and the ``mirrord ctl`` client."""
