"""How the Jupyter side reaches Codestral: the wire protocol, the clients, where requests go."""
