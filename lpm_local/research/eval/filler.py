"""Filler sessions: the everyday help requests that make a real history long.

PersonaMem histories are long because people mostly ask an assistant for help, and only now and
then say something about themselves. Filler exchanges here are neutral tasks (no first-person
facts or tastes that could contradict a persona), so they only make memory harder: the personal
turns sit somewhere inside many tokens of unrelated chat. Each exchange takes a task, one of its
phrasings and an ordered subset of its answer sentences, so long histories repeat little.
"""

from __future__ import annotations

import random

from lpm_local.chat.encoding import Turn
from lpm_local.research.eval.cases import TokenCounter, history_token_count

TASKS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("How do I descale a kettle?", "My kettle has white crust inside. How do I clean it?"),
        (
            "Fill it halfway with equal parts water and white vinegar.",
            "Bring it to the boil and leave it for an hour.",
            "Pour the mixture away and rinse it two or three times.",
            "Boil fresh water once and discard it to remove any taste.",
            "Citric acid works too if you dislike the smell of vinegar.",
            "Doing this monthly keeps the element efficient.",
        ),
    ),
    (
        (
            "Can you help me write a polite email asking my landlord to fix a leak?",
            "How should I word a message to my landlord about a leaking tap?",
        ),
        (
            "Start with a short greeting and the address of the flat.",
            "Describe the leak plainly: where it is and since when.",
            "Mention any damage it is causing so the urgency is clear.",
            "Ask for a repair date and offer times when you are at home.",
            "Keep a copy of the email in case you need to follow up.",
            "Close by thanking them for their help.",
        ),
    ),
    (
        ("What's a good way to keep track of monthly expenses?", "How can I make a simple budget?"),
        (
            "List your fixed costs first: rent, utilities, subscriptions.",
            "Track every purchase for one month to see the real picture.",
            "Group spending into a handful of categories.",
            "Set a limit per category and review it weekly.",
            "A spreadsheet is enough; apps can help with automatic imports.",
            "Put savings aside at the start of the month, not the end.",
        ),
    ),
    (
        (
            "How long should I boil an egg for a runny yolk?",
            "What is the timing for soft-boiled eggs?",
        ),
        (
            "Lower the eggs into water that is already boiling.",
            "Six minutes gives a set white and a runny yolk.",
            "Seven minutes gives a jammy, just-set yolk.",
            "Move them straight into cold water to stop the cooking.",
            "Eggs straight from the fridge may need thirty seconds more.",
            "Older eggs peel more easily than very fresh ones.",
        ),
    ),
    (
        ("Can you explain what compound interest is?", "How does compound interest work?"),
        (
            "Compound interest is interest earned on earlier interest as well as on the original "
            "amount.",
            "Each period the interest is added to the balance.",
            "The next period's interest is then calculated on the larger balance.",
            "Over long periods this makes growth accelerate.",
            "The rule of 72 estimates how many years it takes to double.",
            "Fees and inflation reduce the real return.",
        ),
    ),
    (
        (
            "How do I get rid of fruit flies in the kitchen?",
            "There are tiny flies around my fruit bowl. What can I do?",
        ),
        (
            "Remove overripe fruit and empty the compost bin.",
            "Set a trap: a jar with cider vinegar and a drop of washing-up liquid.",
            "Cover the jar with cling film and poke a few small holes.",
            "Clean the sink drain, where they often breed.",
            "Keep fruit in the fridge for a week or so.",
            "The population collapses once there is nothing to breed in.",
        ),
    ),
    (
        (
            "What's the difference between a virus and bacteria?",
            "Are viruses and bacteria the same thing?",
        ),
        (
            "Bacteria are single-celled organisms that can live on their own.",
            "Viruses are much smaller and need a host cell to reproduce.",
            "Antibiotics work against many bacteria but not against viruses.",
            "Vaccines exist for diseases caused by both.",
            "Most bacteria are harmless and many are useful.",
            "Hand washing helps against both.",
        ),
    ),
    (
        ("How can I improve my sleep?", "Any tips for falling asleep faster?"),
        (
            "Keep the same wake-up time every day, weekends included.",
            "Avoid caffeine after early afternoon.",
            "Dim the lights and put screens away an hour before bed.",
            "Keep the bedroom cool, dark and quiet.",
            "If you cannot sleep after twenty minutes, get up and read until you feel sleepy.",
            "Regular daytime exercise helps, but not right before bed.",
        ),
    ),
    (
        ("How do I write a good cover letter?", "What should go into a cover letter?"),
        (
            "Address it to a named person if you can find one.",
            "Open with the role and why it interests you.",
            "Pick two achievements that match the job description.",
            "Show what you would bring, not only what you want.",
            "Keep it under one page.",
            "End with a clear line about an interview.",
        ),
    ),
    (
        ("How do I remove a red wine stain from a carpet?", "I spilled red wine on the rug. Help?"),
        (
            "Blot, do not rub, with a clean cloth.",
            "Pour a little cold water on the stain and blot again.",
            "Cover it with a paste of baking soda and water.",
            "Let it dry and vacuum the powder away.",
            "Dish soap with hydrogen peroxide works on light carpets; test a hidden spot first.",
            "Act quickly: fresh stains come out far more easily.",
        ),
    ),
    (
        (
            "What's a simple way to learn touch typing?",
            "How can I type faster without looking at the keys?",
        ),
        (
            "Learn the home row position first.",
            "Practise ten to fifteen minutes every day.",
            "Focus on accuracy before speed.",
            "Use a free online course with graded lessons.",
            "Cover your hands with a cloth if you keep looking down.",
            "Most people see progress within a few weeks.",
        ),
    ),
    (
        ("How often should I water a snake plant?", "Am I overwatering my snake plant?"),
        (
            "Snake plants like to dry out completely between waterings.",
            "Every two to three weeks is enough in summer.",
            "In winter once a month is usually plenty.",
            "Yellow, soft leaves are a sign of too much water.",
            "Use a pot with a drainage hole.",
            "They tolerate low light but grow faster in bright, indirect light.",
        ),
    ),
    (
        ("Can you summarise how a mortgage works?", "What do I need to know about mortgages?"),
        (
            "A mortgage is a loan secured on the property you buy.",
            "You repay it monthly over a fixed term, often 25 years.",
            "Each payment covers interest and part of the loan.",
            "Rates can be fixed for a period or follow a benchmark.",
            "A larger deposit usually means a lower rate.",
            "Missing payments puts the home at risk, so budget carefully.",
        ),
    ),
    (
        ("How do I back up the photos on my phone?", "What is the safest way to keep my photos?"),
        (
            "Turn on the automatic cloud backup your phone offers.",
            "Also copy them to a computer or an external drive now and then.",
            "Keep at least two copies in different places.",
            "Check that the backup actually finished before deleting anything.",
            "Shared family albums are not a backup.",
            "Once a year, open a few old files to make sure they still work.",
        ),
    ),
    (
        ("How should I prepare for a job interview?", "Any advice before my interview next week?"),
        (
            "Read the job description and match your experience to it.",
            "Prepare short stories that show results.",
            "Research the company's recent news.",
            "Have two or three questions ready for them.",
            "Plan the route or test the video call the day before.",
            "Send a short thank-you note afterwards.",
        ),
    ),
    (
        ("Why does bread go stale?", "How can I keep bread fresh for longer?"),
        (
            "Bread goes stale as its starch recrystallises and loses moisture.",
            "The fridge actually speeds this up.",
            "Keep it in a bread box or a paper bag at room temperature.",
            "Freeze slices you will not eat within two days.",
            "Toast frozen slices straight from the freezer.",
            "A few minutes in a hot oven revives a stale loaf.",
        ),
    ),
    (
        ("How do I unclog a bathroom sink?", "My sink drains really slowly. What can I try?"),
        (
            "Remove the stopper and pull out any hair.",
            "Pour boiling water down the drain.",
            "Try baking soda followed by vinegar, then more hot water.",
            "A plunger can clear deeper blockages.",
            "Unscrew and clean the U-bend over a bucket.",
            "Call a plumber if water backs up elsewhere.",
        ),
    ),
    (
        (
            "What's the best way to memorise vocabulary in a new language?",
            "How can I remember new words?",
        ),
        (
            "Use spaced repetition flashcards.",
            "Learn words in short phrases, not alone.",
            "Say them out loud and write them by hand.",
            "Review right before sleep.",
            "Use new words in a sentence the same day.",
            "Ten new words a day adds up quickly.",
        ),
    ),
)


def filler_exchange(rng: random.Random, avoid: int | None = None) -> tuple[int, list[Turn]]:
    """(task index, [user request, the assistant's answer of 3-5 sentences in their original
    order]); ``avoid``: a task index not to repeat back to back."""
    task = rng.randrange(len(TASKS) - (avoid is not None))
    if avoid is not None and task >= avoid:
        task += 1
    requests, sentences = TASKS[task]
    k = rng.randint(3, min(5, len(sentences)))
    chosen = sorted(rng.sample(range(len(sentences)), k))
    return task, [
        Turn("user", rng.choice(requests)),
        Turn("assistant", " ".join(sentences[i] for i in chosen)),
    ]


def filler_sessions(
    rng: random.Random, budget_tokens: int, count: TokenCounter, *, max_exchanges: int = 3
) -> list[list[Turn]]:
    """Sessions of 1..``max_exchanges`` filler exchanges totalling about ``budget_tokens``
    (the last exchange may overshoot by one exchange; a budget <= 0 gives no session)."""
    sessions: list[list[Turn]] = []
    spent, last = 0, None
    while spent < budget_tokens:
        session: list[Turn] = []
        for _ in range(rng.randint(1, max_exchanges)):
            last, exchange = filler_exchange(rng, last)
            session += exchange
            spent += history_token_count(exchange, count)
            if spent >= budget_tokens:
                break
        sessions.append(session)
    return sessions


def filler_history(rng: random.Random, budget_tokens: int, count: TokenCounter) -> list[Turn]:
    """A flat filler history of about ``budget_tokens`` tokens (used by ``lpm bench``)."""
    return [turn for session in filler_sessions(rng, budget_tokens, count) for turn in session]
