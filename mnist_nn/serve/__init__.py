"""``python -m mnist_nn.serve``: a local web playground to draw digits, look inside a network, and train
while watching (Starlette and uvicorn: ``pip install ".[serve]"``).

:mod:`~mnist_nn.serve.app` is the JSON API and the page; :mod:`~mnist_nn.serve.security` the rules every
request meets; :mod:`~mnist_nn.serve.models` the run folders as models; :mod:`~mnist_nn.serve.draw`
prediction and the network's insides; :mod:`~mnist_nn.serve.explore` evaluation; :mod:`~mnist_nn.serve.form`
the training form; :mod:`~mnist_nn.serve.jobs` the one training at a time; ``static/`` the page (plain
HTML, CSS and ES modules: no build step, nothing from another host).
"""
