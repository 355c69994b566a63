"""`python app.py`: open the rushes studio on the embedded toyworld model (http://127.0.0.1:7860)."""

from studio.app import launch

if __name__ == "__main__":
    launch()
