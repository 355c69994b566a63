"""`python app.py`: open the rushes studio on the embedded toyworld model (http://127.0.0.1:7860, or the next
free port; $GRADIO_SERVER_PORT picks another)."""

if __name__ == "__main__":
    from engine.worker import EngineProcess

    engine = EngineProcess()  # first: the worker imports torch and diffusers while gradio is imported here
    engine.preload("toyworld")

    from studio.app import launch

    launch(engine=engine)
