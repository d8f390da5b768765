"""GET /v1/models and /v1/models/{id}: every model the server answers for, image, chat and speech alike."""

from fastapi import APIRouter, Request

from incasa.serve.protocol import APIError, ModelCard, ModelList

router = APIRouter(tags=["models"])


def _cards(request: Request) -> list[ModelCard]:
    ctx = request.app.state.ctx
    created = ctx.started_at
    cards = [ModelCard(id=name, created=created, kind="image", loaded=engine.loaded())
             for name, engine in ctx.registry.image.items()]
    cards += [ModelCard(id=name, created=created, kind="chat", loaded=True) for name in ctx.registry.chat]
    cards += [ModelCard(id=name, created=created, kind="speech", loaded=True) for name in ctx.registry.speech]
    return cards


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=_cards(request))


@router.get("/v1/models/{model}", response_model=ModelCard)
async def retrieve_model(model: str, request: Request) -> ModelCard:
    for card in _cards(request):
        if card.id == model:
            return card
    raise APIError(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")
