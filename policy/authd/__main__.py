"""python3 -m policy.authd [--socket PATH]: campus-mfa-authd in the foreground."""
import sys

from .server import main

sys.exit(main())
