"""The ceiling of the gate's stack (bench/gate.py): a Flask /auth that only answers 200."""
from flask import Flask, Response

app = Flask(__name__)


@app.route("/auth")
def auth() -> Response:
    return Response(status=200, headers={"Remote-User": "bench"})
